package safepoint

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"graft/internal/symtab"
	"graft/internal/testutil"
	"graft/tracer"
)

// imageMem is a target memory holding an ELF's PT_LOAD segments mapped at
// base (as graft's loader maps a patch image) and a few stack words.
type imageMem struct {
	base  uint64
	img   []byte
	stack fakeMem
}

func (m *imageMem) ReadAt(b []byte, addr int64) (int, error) {
	a := uint64(addr)
	if a >= m.base && a+uint64(len(b)) <= m.base+uint64(len(m.img)) {
		return copy(b, m.img[a-m.base:]), nil
	}
	return m.stack.ReadAt(b, addr)
}

// mapImage lays out path's segments at base and describes them as an
// Image, the way the controller does from a patch record.
func mapImage(t *testing.T, path string, base uint64) (*imageMem, Image) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var end uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			end = max(end, p.Vaddr+p.Memsz)
		}
	}
	img := make([]byte, (end+4095)&^4095)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			if _, err := p.ReadAt(img[p.Vaddr:p.Vaddr+p.Filesz], 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	im := Image{Name: "image", Base: base, Size: uint64(len(img))}
	eh, hdr := f.Section(".eh_frame"), f.Section(".eh_frame_hdr")
	if eh == nil || hdr == nil {
		t.Fatalf("%s: no .eh_frame or .eh_frame_hdr", path)
	}
	im.EhFrame, im.EhFrameSize = eh.Addr, eh.Size
	im.EhFrameHdr, im.EhFrameHdrSize = hdr.Addr, hdr.Size
	st, err := symtab.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range st.Find("main") {
		im.Symbols = append(im.Symbols, Symbol{Name: fn.Name, Addr: fn.Addr, Size: fn.Size})
	}
	if len(im.Symbols) != 1 {
		t.Fatal("no main")
	}
	return &imageMem{base: base, img: img, stack: fakeMem{}}, im
}

// TestUnwindImageFromMemory unwinds through an image known only by its
// mapping and the recorded place of its .eh_frame: no file is opened (the
// Image names none). From inside a PLT stub (a CFA expression) to main,
// which is named from the Image's symbols.
func TestUnwindImageFromMemory(t *testing.T) {
	path := testutil.Build(t, "sp_stacks")
	const base = 0x7f0000000000
	mem, im := mapImage(t, path, base)
	u, err := NewUnwinderImages(nil, []Image{im})
	if err != nil {
		t.Fatal(err)
	}
	u.Preload(mem)
	if p := u.Problems(); len(p) > 0 {
		t.Fatal(p)
	}
	const rsp = 0x7ffd0000
	ret := base + im.Symbols[0].Addr + 9
	mem.stack[rsp] = ret
	frames, _ := u.Unwind(tracer.Regs{Rip: base + findPLT(t, path), Rsp: rsp}, mem)
	if len(frames) < 2 || frames[0].Incomplete || frames[0].CFA != rsp+8 {
		t.Fatalf("stub frame: %s", FormatStack(frames))
	}
	if frames[1].PC != ret || frames[1].Function != "main" || frames[1].Module != "image" {
		t.Fatalf("caller: %s", FormatStack(frames))
	}
	if fn, mod := u.Symbolize(ret - 1); fn != "main" || mod != "image" {
		t.Errorf("Symbolize: %q in %q", fn, mod)
	}
}

// TestImageCFIChecked: bytes that are not the image's CFI are never used:
// a wrong recorded place, garbage, and a patch that records no .eh_frame
// all leave the image without CFI (stacks through it incomplete), with the
// reason, and nothing panics.
func TestImageCFIChecked(t *testing.T) {
	path := testutil.Build(t, "sp_stacks")
	const base = 0x7f0000000000
	for _, c := range []struct {
		name string
		edit func(m *imageMem, im *Image)
		want string
	}{
		{"moved", func(m *imageMem, im *Image) { im.EhFrame += 8 }, "points at"},
		{"outside", func(m *imageMem, im *Image) { im.EhFrame = im.Size }, "outside the image"},
		{"garbage", func(m *imageMem, im *Image) {
			for i := range im.EhFrameSize {
				m.img[im.EhFrame+i] = byte(i*7 + 3)
			}
		}, ".eh_frame"},
		{"unrecorded", func(m *imageMem, im *Image) { im.EhFrame, im.EhFrameSize = 0, 0 }, "records no .eh_frame"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem, im := mapImage(t, path, base)
			c.edit(mem, &im)
			u, err := NewUnwinderImages(nil, []Image{im})
			if err != nil {
				t.Fatal(err)
			}
			u.Preload(mem)
			p := u.Problems()
			if len(p) != 1 || !strings.Contains(p[0].Error(), c.want) {
				t.Fatalf("problems %v, want one containing %q", p, c.want)
			}
			frames, err := u.Unwind(tracer.Regs{Rip: base + im.Symbols[0].Addr + 4, Rsp: 0x7ffd0000}, mem)
			var ie *IncompleteError
			if !errors.As(err, &ie) || len(frames) != 1 || !frames[0].Incomplete {
				t.Fatalf("want an incomplete stack, got %v: %s", err, FormatStack(frames))
			}
		})
	}
}

// TestWaitSafeStacksReturnsCheckedStacks: the stacks WaitSafeStacks hands
// back are those of the pause it leaves the target in, one per thread.
func TestWaitSafeStacksReturnsCheckedStacks(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid) // released at cleanup, checked there
	stacks, err := WaitSafeStacks(context.Background(), p, u, Spec{}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	again, err := u.StacksOf(p)
	if rerr := p.Resume(); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(stacks) != len(p.Threads()) || len(stacks) == 0 {
		t.Fatalf("%d stacks for %d threads", len(stacks), len(p.Threads()))
	}
	// Still stopped since the check: a second unwind sees the same.
	for tid, frames := range again {
		if fmt.Sprint(frames) != fmt.Sprint(stacks[tid]) {
			t.Errorf("thread %d: returned %s, now %s", tid, FormatStack(stacks[tid]), FormatStack(frames))
		}
	}
}
