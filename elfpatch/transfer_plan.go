package elfpatch

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// xferCand is a global whose layout changed, found by globals().
type xferCand struct {
	o, n   *symbol
	ot, nt dwarf.Type
	src    string
}

// transfers generates a Transfer for every global whose layout changed
// (issue 12) and, for those that must move to NEW's object, makes every OLD
// function that refers to them part of the patch.
func (d *differ) transfers() {
	if len(d.xfer) == 0 {
		return
	}
	changed := map[string]bool{}
	for _, f := range d.r.Changed {
		changed[f.Name+"\x00"+f.File] = true
	}
	transferred := map[*symbol]bool{}
	for _, c := range d.xfer {
		transferred[c.o] = true
	}
	for _, c := range d.xfer {
		t := d.transfer(c, changed)
		d.r.Transfers = append(d.r.Transfers, t)
	}
	sortTransfers(d.r.Transfers)
	// Pointer fields of the other OLD globals: any that points into a
	// transferred object when the patch goes in is rewritten.
	for _, o := range d.old.objs {
		if transferred[o] {
			continue
		}
		t, _, _ := d.old.objInfo(o)
		if t == nil || !hasPointer(t, 0) {
			continue
		}
		var offs [][2]uint64
		ptrFields(t, 0, &offs, 0)
		for _, f := range offs {
			if f[0]+8 <= o.size {
				d.r.PtrSites = append(d.r.PtrSites, PtrSite{Global: o.name, File: o.file, GlobalAddr: o.addr, Addr: o.addr + f[0], Pointee: f[1]})
			}
		}
	}
	sort.Slice(d.r.PtrSites, func(i, j int) bool { return d.r.PtrSites[i].Addr < d.r.PtrSites[j].Addr })
}

func (d *differ) transfer(c xferCand, changed map[string]bool) Transfer {
	o, n := c.o, c.n
	t := Transfer{
		Name: n.name, File: n.file, Local: n.local, Source: c.src,
		OldAddr: o.addr, OldSize: o.size, NewAddr: n.addr, NewSize: n.size,
	}
	t.Type, _ = aggName(c.nt)
	if t.Type == "" {
		t.Type = typeString(c.nt)
	}
	var rules *Rules
	if d.rules != nil {
		rules = d.rules[n.name]
	}
	var lost []string
	t.Ops, t.Notes, t.Todo = genTransfer(c.ot, c.nt, rules)
	for _, note := range t.Notes {
		if strings.HasSuffix(note, "removed, not carried") || strings.HasSuffix(note, "dropped (operator)") {
			lost = append(lost, strings.SplitN(note, ":", 2)[0])
		}
	}
	if v := d.new.b.read(n.addr, n.size); v != nil && !allZero(v) {
		t.Init = append(HexBytes(nil), v...)
	}
	// A writable global whose initial value changed too may be a table
	// the program never writes: carrying its running contents would keep
	// OLD's entries. The operator decides.
	if ov, nv := d.old.objValue(o), d.new.objValue(n); (rules == nil || !rules.Fresh && !rules.Carry) && !(allZero(ov) && allZero(nv)) && !bytes.Equal(ov, nv) {
		t.Todo = append(t.Todo, "its initial value changed too: carry the running contents (the generated mapping; say `carry: true`) or take the new build's initial value (`fresh: true`)?")
	}

	// Reverse: the same generation from NEW to OLD, with the operator's
	// renames turned round. Lost members, unit changes and initial
	// values have no inverse.
	switch {
	case len(lost) > 0:
		t.Irreversible = fmt.Sprintf("member %s is not carried to the new layout, so reverting cannot restore it", strings.Join(lost, ", "))
	case rules != nil && (len(rules.Scale) > 0 || len(rules.Init) > 0):
		t.Irreversible = "the operator's conversion (scale or initial value) has no generated inverse"
	default:
		var rev *Rules
		if rules != nil && (len(rules.From) > 0 || len(rules.Enum) > 0) {
			rev = &Rules{From: map[string]string{}, Enum: map[string]map[string]string{}}
			for k, v := range rules.From {
				rev.From[v] = k
			}
			for k, m := range rules.Enum {
				inv := map[string]string{}
				for a, b := range m {
					inv[b] = a
				}
				rev.Enum[k] = inv
			}
		}
		rops, _, rtodo := genOps(c.nt, c.ot, rev, true)
		if len(rtodo) > 0 {
			t.Irreversible = "no reverse mapping: " + rtodo[0]
		} else {
			t.Reverse = rops
		}
	}

	if hdr, err := cHeader(t.Name, c.ot, c.nt, o.size, n.size); err == nil {
		t.CHeader = hdr
	}
	if rules != nil && rules.C != "" {
		prog, _, err := buildCTransformer(c, t.Name, rules.C)
		if err != nil {
			t.Todo = append(t.Todo, err.Error())
		} else {
			t.Program = prog
			if len(t.Todo) > 0 {
				t.Notes = append(t.Notes, fmt.Sprintf("left to the C transformer (%s): %s", rules.C, strings.Join(t.Todo, "; ")))
			}
			t.Todo = nil
			t.Reverse, t.Irreversible = nil, "a C transformer has no generated inverse"
		}
	}
	t.InPlace = d.fitsInPlace(o, n)
	if t.InPlace {
		// Converted in place, NEW's object starts from NEW's file bytes,
		// not from a relocated copy: a pointer NEW initialises at load
		// time in a member nothing carries would be left unrelocated.
		for _, off := range d.new.b.relocOffs {
			if off < n.addr || off >= n.addr+n.size || coveredByOps(t.Ops, off-n.addr) {
				continue
			}
			t.Todo = append(t.Todo, fmt.Sprintf("the new layout's initial value holds a pointer at +%d (set at load time), which a conversion in place cannot relocate: give the member an `init` or a `from`", off-n.addr))
		}
	}
	keys := []string{"data:" + d.old.objKey(o), "gotrel:" + o.key()}
	for _, u := range d.old.units {
		for _, k := range keys {
			if containsSorted(u.refs, k) {
				t.Users = append(t.Users, u.sym.name)
				if !t.InPlace && d.status[u] == "unchanged" {
					d.addUser(u, t.Name, changed)
				}
				break
			}
		}
	}
	sort.Strings(t.Users)
	t.Users = dedup(t.Users)
	d.soleHomes(&t, c, rules)
	where := "in place at its old address (it fits in the old object's slot); only the changed functions move"
	if !t.InPlace {
		where = fmt.Sprintf("into the new object in the new image; every function using it (%s) is redirected to its new copy", strings.Join(t.Users, ", "))
	}
	if len(t.Todo) > 0 {
		d.reason(VerdictTransformer, t.Name, c.src, "state transformer for %s needs the operator: %s (fill the state description and diff again with --state)", t.Name, strings.Join(t.Todo, "; "))
	} else {
		d.reason(VerdictAuto, t.Name, c.src, "contents of %s are converted in the pause by a generated transformer (%d operations), %s", t.Name, len(t.Ops), where)
	}
	return t
}

// fitsInPlace reports whether NEW's object fits at OLD's address: up to
// the next OLD object (or the end of its section), in writable memory.
func (d *differ) fitsInPlace(o, n *symbol) bool {
	if n.size <= o.size {
		return true
	}
	sec := d.old.b.section(o.addr)
	if sec == nil || sec.Flags&elf.SHF_WRITE == 0 {
		return false
	}
	end := o.addr + n.size
	if end > sec.Addr+sec.Size {
		return false
	}
	for _, s := range d.old.b.syms {
		if s != o && s.addr < end && s.addr+max(s.size, 1) > o.addr+o.size && s.addr >= o.addr {
			return false
		}
	}
	return true
}

// addUser makes an unchanged OLD function that uses a moved global part of
// the patch: it must use the new object, so NEW's copy runs.
func (d *differ) addUser(u *unit, global string, changed map[string]bool) {
	nu := d.new.byKey[u.key]
	if nu == nil {
		d.reason(VerdictRefused, u.sym.name, "", "%s uses %s, whose contents move to a new object, and has no counterpart in the new build", u.sym.name, global)
		return
	}
	if changed[nu.sym.name+"\x00"+nu.sym.file] {
		return
	}
	changed[nu.sym.name+"\x00"+nu.sym.file] = true
	d.status[u] = "changed"
	f := d.new.makeFunc(nu, false)
	f.OldAddr, f.OldSize = u.sym.addr, u.sym.size
	f.Pad, f.Patchable, f.Why = patchable(d.old.b, u)
	d.r.Changed = append(d.r.Changed, f)
	d.r.Unchanged--
	if !f.Patchable {
		d.reason(VerdictRefused, f.Name, f.Source, "%s uses %s, whose contents move to a new object, but its entry cannot take a jump: %s", f.Name, global, f.Why)
		return
	}
	d.reason(VerdictAuto, f.Name, f.Source, "code of %s is unchanged but it uses %s, whose contents move to a new object: calls jump to its new copy, which uses the new object", f.Name, global)
	for _, ref := range nu.refs {
		d.newRefs[ref] = append(d.newRefs[ref], f.Name)
	}
}

func containsSorted(s []string, k string) bool {
	i := sort.SearchStrings(s, k)
	return i < len(s) && s[i] == k
}

// stackOnlyInPatch reports whether a changed type that lives in locals and
// parameters (storage "stack") is used only by functions the patch
// replaces: none of them may be on a stack in the pause, so no frame holds
// an object of the old layout when the new code starts. It records why.
func (d *differ) stackOnlyInPatch(tc *TypeChange) bool {
	if tc.Storage != "stack" || len(d.r.Transfers) == 0 {
		return false
	}
	in := map[string]bool{}
	for _, f := range d.r.Changed {
		in[f.Name] = true
	}
	for _, u := range tc.UsedBy {
		if !in[u] {
			return false
		}
	}
	d.reason(VerdictAuto, tc.Name, "", "%s changed layout and lives in locals of %s: every one is replaced by the patch and must be off every stack in the pause, so no frame keeps an object of the old layout", tc.Name, strings.Join(tc.UsedBy, ", "))
	return true
}

// inRelro reports whether addr lies in the range the dynamic linker
// write-protects after relocation (PT_GNU_RELRO): constant at run time.
func (b *Binary) inRelro(addr uint64) bool {
	for _, p := range b.f.Progs {
		if p.Type == elf.PT_GNU_RELRO && addr >= p.Vaddr && addr < p.Vaddr+p.Memsz {
			return true
		}
	}
	return false
}

// coveredByOps reports whether an operation writes the destination byte off.
func coveredByOps(ops []XferOp, off uint64) bool {
	for _, op := range ops {
		if off >= op.Dst && off < op.Dst+op.DstSize {
			return true
		}
	}
	return false
}
