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

// showOpts are show's argument and flags.
type showOpts struct {
	File           string
	JSON           bool
	AllowedSigners string // check the signature against these signers
	Signature      string // the signature file ("" = FILE.sig)
}

func runShow(stdout, stderr io.Writer, o showOpts) error {
	pos := []string{o.File}
	asJSON := &o.JSON
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
	trust, err := graft.LoadTrustPolicy(o.AllowedSigners, "")
	if err != nil {
		return err
	}
	v.Signature = trust.DescribeSignature(pos[0], o.Signature)
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
	fmt.Fprintf(stdout, "\nnew code: %s bytes, %d segments, %d functions redirected, %d references into the running program, %d library symbols, %d relative relocations\n",
		v.Image.Size, len(v.Image.Segments), len(v.Image.Redirects), len(v.Image.Fixups), len(v.Image.Imports), v.Image.Relatives)
	for _, s := range v.Image.Segments {
		fmt.Fprintf(stdout, "  segment %s memsz %d filesz %d %s sha256 %s\n", s.Vaddr, s.Memsz, s.Filesz, s.Prot, s.SHA256[:16])
	}
	for _, r := range v.Image.Redirects {
		fmt.Fprintf(stdout, "  %s: old %s -> new %s\n", r.Name, r.Old, r.New)
	}
	if len(v.Image.Segments) == 0 {
		fmt.Fprintln(stdout, "  (no code: this patch cannot be applied)")
	}
	return nil
}
