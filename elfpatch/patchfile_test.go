package elfpatch

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// samplePatch is a real patch of the newglobal fixture, image included.
func samplePatch(t testing.TB) *Patch {
	t.Helper()
	p, err := BuildPatch(openFixture(t, "newglobal", "v1"), openFixture(t, "newglobal", "v2"))
	require.NoError(t, err)
	require.NotEmpty(t, p.Image.Segments, "PlanImage filled the image")
	return p
}

func encode(t testing.TB, p *Patch) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := p.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), n)
	return buf.Bytes()
}

func TestPatchRoundTrip(t *testing.T) {
	p := samplePatch(t)
	data := encode(t, p)
	q, err := ReadPatch(bytes.NewReader(data))
	require.NoError(t, err)
	assert.Equal(t, PatchVersion, q.Version)
	assert.Equal(t, p.OldBuildID, q.OldBuildID)
	assert.Equal(t, p.NewBuildID, q.NewBuildID)
	assert.Equal(t, p.Report, q.Report)
	assert.Equal(t, p.Image, q.Image, "segments with their data, redirects, fixups, imports")
	require.Len(t, q.Image.Redirects, 1)
	assert.Equal(t, "handle", q.Image.Redirects[0].Name)
	// Writing what was read gives the same bytes: the format is
	// deterministic and loses nothing.
	assert.Equal(t, data, encode(t, q))
}

func TestPatchBoundToOldBuildID(t *testing.T) {
	old := openFixture(t, "body", "v1")
	p, err := BuildPatch(old, openFixture(t, "body", "v2"))
	require.NoError(t, err)
	assert.Equal(t, old.BuildID(), p.OldBuildID)
	assert.NotEqual(t, p.OldBuildID, p.NewBuildID)
}

// TestBuildPatchTransformer: a global whose layout changed cannot be
// planned until state transformers exist; BuildPatch says so.
// A global whose layout changed gets a generated transformer, and the
// patch carries it (format version 3) through a write and a read.
func TestBuildPatchTransformer(t *testing.T) {
	p, err := BuildPatch(openFixture(t, "globaltype", "v1"), openFixture(t, "globaltype", "v2"))
	require.NoError(t, err)
	require.Len(t, p.Report.Transfers, 1)
	x := p.Report.Transfers[0]
	assert.Equal(t, "g_stats", x.Name)
	assert.True(t, x.Complete())
	assert.False(t, x.InPlace, "16 bytes do not fit the old 8-byte slot")
	assert.Contains(t, x.Users, "main")
	assert.Contains(t, x.CHeader, "struct stats__old {", "types for a C transformer, not carried")
	q, err := ReadPatch(bytes.NewReader(encode(t, p)))
	require.NoError(t, err)
	p.Report.Transfers[0].CHeader = ""
	assert.Equal(t, p.Report.Transfers, q.Report.Transfers)
	// g_stats lives in the image, where a stacked patch finds it.
	found := false
	for _, o := range q.Image.Objects {
		found = found || o.Name == "g_stats"
	}
	assert.True(t, found, "moved object listed among the image's objects")
}

func TestBuildPatchRefused(t *testing.T) {
	old, new := openFixture(t, "unpatchable", "v1"), openFixture(t, "unpatchable", "v2")
	_, err := BuildPatch(old, new)
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrRefused))
	var re *RefusedError
	require.True(t, errors.As(err, &re))
	assert.Equal(t, VerdictRefused, re.Report.Verdict)
	p, err := BuildPatch(old, new, AllowRefused())
	require.NoError(t, err)
	assert.Equal(t, VerdictRefused, p.Report.Verdict)
}

func TestReadPatchRejects(t *testing.T) {
	good := encode(t, samplePatch(t))
	var fe *FormatError

	// Every truncation is an error, never a panic or a partial patch.
	for n := 0; n < len(good); n += 1 + n/16 {
		_, err := ReadPatch(bytes.NewReader(good[:n]))
		require.Error(t, err, "truncated to %d bytes", n)
		require.True(t, errors.As(err, &fe), "truncated to %d: %v", n, err)
	}

	// Any flipped payload byte fails the sha256 check.
	for _, off := range []int{headerSize, headerSize + 20, len(good) / 2, len(good) - 1} {
		bad := append([]byte(nil), good...)
		bad[off] ^= 0x40
		_, err := ReadPatch(bytes.NewReader(bad))
		require.True(t, errors.As(err, &fe), "flip at %d: %v", off, err)
		assert.Contains(t, err.Error(), "sha256 mismatch")
	}

	bad := append([]byte(nil), good...)
	bad[0] = 'X'
	_, err := ReadPatch(bytes.NewReader(bad))
	require.True(t, errors.As(err, &fe))
	assert.Equal(t, int64(0), fe.Off)
	assert.Contains(t, err.Error(), "bad magic")

	bad = append([]byte(nil), good...)
	bad[8] = 9
	_, err = ReadPatch(bytes.NewReader(bad))
	require.True(t, errors.As(err, &fe))
	assert.Equal(t, int64(8), fe.Off)
	assert.Contains(t, err.Error(), "unsupported format version")

	_, err = ReadPatch(bytes.NewReader(append(append([]byte(nil), good...), 0)))
	require.True(t, errors.As(err, &fe))
	assert.Contains(t, err.Error(), "trailing data")
}

// TestReadPatchValidates: a well-formed, correctly hashed file whose
// metadata lies is still rejected.
func TestReadPatchValidates(t *testing.T) {
	p := samplePatch(t)
	p.Image.Segments[0].Data = make([]byte, p.Image.Segments[0].Memsz+1)
	_, err := ReadPatch(bytes.NewReader(encode(t, p)))
	var fe *FormatError
	require.True(t, errors.As(err, &fe), "%v", err)
	assert.Contains(t, err.Error(), "bytes of data for memsz")

	p = samplePatch(t)
	p.OldBuildID = ""
	_, err = ReadPatch(bytes.NewReader(encode(t, p)))
	require.True(t, errors.As(err, &fe), "%v", err)
	assert.Contains(t, err.Error(), "no old build-id")
}

// FuzzReadPatch: arbitrary bytes never panic ReadPatch, and whatever it
// accepts survives a write/read round trip unchanged.
func FuzzReadPatch(f *testing.F) {
	good := encode(f, samplePatch(f))
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add(good[:len(good)/2])
	empty := encode(f, &Patch{OldBuildID: "00", Report: &Report{Verdict: VerdictAuto}})
	f.Add(empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ReadPatch(bytes.NewReader(data))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error is not a FormatError: %v", err)
			}
			return
		}
		again := encode(t, p)
		q, err := ReadPatch(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-read of a written patch: %v", err)
		}
		if !bytes.Equal(again, encode(t, q)) {
			t.Fatal("write/read/write is not stable")
		}
	})
}
