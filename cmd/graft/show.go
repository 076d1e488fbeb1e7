package main

import (
	"crypto/sha256"
	enchex "encoding/hex"
	"fmt"
	"io"
	"os"

	"graft"
	"graft/elfpatch"
)

func init() {
	register("show", "print a patch file", runShow)
}

// showOutput is show's --json document: the patch without the segment
// bytes, which are summarised by size and hash.
type showOutput struct {
	Version    int                 `json:"version"`
	OldBuildID string              `json:"old_build_id"`
	NewBuildID string              `json:"new_build_id"`
	OldPath    string              `json:"old_path,omitempty"`
	NewPath    string              `json:"new_path,omitempty"`
	Report     *reportOutput       `json:"report"`
	Image      imageOutput         `json:"image"`
	Signature  graft.SignatureInfo `json:"signature"`
}

type imageOutput struct {
	Size      string                `json:"size"`
	Segments  []segmentOutput       `json:"segments"`
	Redirects []patchRedirectOutput `json:"redirects"`
	Fixups    []patchFixupOutput    `json:"fixups"`
	Imports   []patchImportOutput   `json:"imports"`
	Relatives int                   `json:"relatives"`
}

type patchRedirectOutput struct {
	Name    string `json:"name"`
	Old     string `json:"old"`
	OldSize uint64 `json:"old_size"`
	New     string `json:"new"`
	NewSize uint64 `json:"new_size"`
}

type patchFixupOutput struct {
	Off    string             `json:"off"`
	Kind   elfpatch.FixupKind `json:"kind"`
	PCNext string             `json:"pc_next,omitempty"`
	Target string             `json:"target"`
	Symbol string             `json:"symbol"`
}

type patchImportOutput struct {
	Off     string `json:"off"`
	Symbol  string `json:"symbol"`
	Version string `json:"version,omitempty"`
	Addend  int64  `json:"addend,omitempty"`
	Weak    bool   `json:"weak,omitempty"`
}

type segmentOutput struct {
	Vaddr  string `json:"vaddr"`
	Memsz  uint64 `json:"memsz"`
	Filesz int    `json:"filesz"`
	Prot   string `json:"prot"`
	SHA256 string `json:"sha256"`
}

func protString(p int) string {
	b := []byte("---")
	if p&1 != 0 {
		b[0] = 'r'
	}
	if p&2 != 0 {
		b[1] = 'w'
	}
	if p&4 != 0 {
		b[2] = 'x'
	}
	return string(b)
}

func showView(p *elfpatch.Patch) showOutput {
	im := p.Image
	if im == nil {
		im = &elfpatch.Image{}
	}
	v := showOutput{
		Version: p.Version, OldBuildID: p.OldBuildID, NewBuildID: p.NewBuildID,
		OldPath: p.OldPath, NewPath: p.NewPath, Report: reportJSON(p.Report),
		Image: imageOutput{
			Size:      hex(im.Size),
			Segments:  []segmentOutput{},
			Redirects: []patchRedirectOutput{},
			Fixups:    []patchFixupOutput{},
			Imports:   []patchImportOutput{},
			Relatives: len(im.Relatives),
		},
	}
	for _, r := range im.Redirects {
		v.Image.Redirects = append(v.Image.Redirects, patchRedirectOutput{Name: r.Name, Old: hex(r.Old), OldSize: r.OldSize, New: hex(r.New), NewSize: r.NewSize})
	}
	for _, f := range im.Fixups {
		fo := patchFixupOutput{Off: hex(f.Off), Kind: f.Kind, Target: hex(f.Target), Symbol: f.Symbol}
		if f.PCNext != 0 {
			fo.PCNext = hex(f.PCNext)
		}
		v.Image.Fixups = append(v.Image.Fixups, fo)
	}
	for _, i := range im.Imports {
		v.Image.Imports = append(v.Image.Imports, patchImportOutput{Off: hex(i.Off), Symbol: i.Symbol, Version: i.Version, Addend: i.Addend, Weak: i.Weak})
	}
	for _, s := range im.Segments {
		sum := sha256.Sum256(s.Data)
		v.Image.Segments = append(v.Image.Segments, segmentOutput{
			Vaddr: hex(s.Vaddr), Memsz: s.Memsz, Filesz: len(s.Data), Prot: protString(s.Prot), SHA256: enchex.EncodeToString(sum[:]),
		})
	}
	return v
}

func runShow(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("show", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	signers := fs.String("allowed-signers", "", "check the signature against this allowed_signers `FILE` (default "+graft.DefaultAllowedSigners+" if it exists)")
	sigFile := fs.String("signature", "", "the patch's signature `FILE` (default FILE.sig)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: graft show FILE [--json]")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: need one patch FILE, got %d arguments", errUsage, len(pos))
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fmt.Errorf("show patch: %w", err)
	}
	defer f.Close()
	p, err := elfpatch.ReadPatch(f)
	if err != nil {
		return fmt.Errorf("show patch %s: %w", pos[0], err)
	}
	v := showView(p)
	trust, err := graft.LoadTrustPolicy(*signers, "")
	if err != nil {
		return err
	}
	v.Signature = trust.DescribeSignature(pos[0], *sigFile)
	if *asJSON {
		return writeJSON(stdout, v)
	}
	fmt.Fprintf(stdout, "patch %s (format %d)\n", pos[0], p.Version)
	fmt.Fprintf(stdout, "applies to build-id %s", orNone(p.OldBuildID))
	if p.OldPath != "" {
		fmt.Fprintf(stdout, " (%s)", p.OldPath)
	}
	fmt.Fprintf(stdout, "\nnew build-id %s", orNone(p.NewBuildID))
	if p.NewPath != "" {
		fmt.Fprintf(stdout, " (%s)", p.NewPath)
	}
	fmt.Fprintln(stdout)
	switch sg := v.Signature; sg.State {
	case "trusted":
		fmt.Fprintf(stdout, "signed by %s (%s key %s), trusted\n", sg.Signer.Principal, sg.Signer.KeyType, sg.Signer.Fingerprint)
	case "untrusted":
		fmt.Fprintf(stdout, "signature NOT TRUSTED: %s\n", sg.Reason)
	case "unchecked":
		if sg.Signer != nil {
			fmt.Fprintf(stdout, "signed with %s key %s (%s), not checked: no allowed signers configured\n", sg.Signer.KeyType, sg.Signer.Fingerprint, sg.File)
		} else {
			fmt.Fprintf(stdout, "signature %s unreadable: %s\n", sg.File, sg.Reason)
		}
	default:
		fmt.Fprintln(stdout, "unsigned")
	}
	if p.Report != nil {
		printReport(stdout, p.Report)
	}
	fmt.Fprintf(stdout, "\nimage: %s bytes, %d segments, %d redirects, %d fixups, %d imports, %d relatives\n",
		v.Image.Size, len(v.Image.Segments), len(v.Image.Redirects), len(v.Image.Fixups), len(v.Image.Imports), v.Image.Relatives)
	for _, s := range v.Image.Segments {
		fmt.Fprintf(stdout, "  segment %s memsz %d filesz %d %s sha256 %s\n", s.Vaddr, s.Memsz, s.Filesz, s.Prot, s.SHA256[:16])
	}
	for _, r := range v.Image.Redirects {
		fmt.Fprintf(stdout, "  redirect %s: old %s -> new %s\n", r.Name, r.Old, r.New)
	}
	if len(v.Image.Segments) == 0 {
		fmt.Fprintln(stdout, "  (no code: this patch cannot be applied)")
	}
	return nil
}
