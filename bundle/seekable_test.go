package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readVerified is what push does with a bundle: check the table of
// contents signature, then read every manifest, blob and other entry,
// each checked against the signed manifest as it streams.
func readVerified(path string, v Verifier) error {
	a, err := OpenVerified(path, v)
	if err != nil {
		return err
	}
	defer a.Close()
	return readEverything(a)
}

// TestTamperedArchiveFailsTheInstallRead flips bytes over the whole file,
// seek table and table of contents signature included, and reads each
// variant the way push does (no whole-file signature). Every flip fails
// that read unless it decodes to the very bytes that were signed (a few
// bits of a zstd frame do not change the output): nothing unsigned can
// reach a registry. Verify, which checks
// the signature over the file, rejects every flip.
func TestTamperedArchiveFailsTheInstallRead(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	f := newFixture(t)
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, s, 0)
	data := mustRead(t, good)
	if err := readVerified(good, v); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	rng := rand.New(rand.NewSource(3))
	var offsets []int
	slices := 300 * faultScale()
	for i := range slices {
		lo, hi := i*len(data)/slices, (i+1)*len(data)/slices
		offsets = append(offsets, lo+rng.Intn(max(hi-lo, 1)))
	}
	// Every byte of the seek table, and of the first frame's header.
	frames, _ := readSeekTable(bytes.NewReader(data), int64(len(data)))
	last := frames[len(frames)-1]
	for off := int(last.cOff + last.cSize); off < len(data); off++ {
		offsets = append(offsets, off)
	}
	for off := range 16 {
		offsets = append(offsets, off)
	}
	p := filepath.Join(dir, "t.tar.zst")
	os.WriteFile(p+".sig", mustRead(t, good+".sig"), 0o644)
	signed := decompress(t, data)
	void := 0
	for _, off := range offsets {
		b := append([]byte(nil), data...)
		b[off] ^= byte(1 << rng.Intn(8))
		os.WriteFile(p, b, 0o644)
		err := readVerified(p, v)
		switch {
		case err == nil && bytes.Equal(decompress(t, b), signed):
			void++
		case err == nil:
			t.Errorf("flip at %d/%d read as good and decodes to other bytes", off, len(data))
		case !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrUnsupported):
			t.Errorf("flip at %d: unexpected error kind: %v", off, err)
		}
		if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
			t.Errorf("flip at %d: Verify = %v", off, err)
		}
	}
	if void > len(offsets)/20 {
		t.Errorf("%d of %d flips left the decoded bytes unchanged: more than zstd's slack explains", void, len(offsets))
	}
	t.Logf("%d flips (the seek table byte by byte): %d rejected by the install read, %d decode to the signed bytes; Verify rejected all", len(offsets), len(offsets)-void, void)
}

// TestTOCSignature: the manifest's own signature is the second entry and
// is a cosign signature over the manifest bytes; a bundle built without a
// key, or checked with another key, is refused.
func TestTOCSignature(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	_, other := testKeys(t, t.TempDir())
	f := newFixture(t)
	signed := filepath.Join(dir, "signed.tar.zst")
	f.write(t, signed, s, 0)
	a, err := OpenVerified(signed, v)
	if err != nil {
		t.Fatal(err)
	}
	raw, sig := a.raw, a.tocSig
	a.Close()
	sum := sha256.Sum256(raw)
	if err := v.VerifyDigest(sum[:], string(sig)); err != nil {
		t.Errorf("TOC signature does not verify over the manifest bytes: %v", err)
	}
	if _, err := OpenVerified(signed, other); !errors.Is(err, ErrSignature) {
		t.Errorf("other key: %v", err)
	}
	unsigned := filepath.Join(dir, "unsigned.tar.zst")
	newFixture(t).write(t, unsigned, nil, 0)
	if _, err := OpenVerified(unsigned, v); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "unsigned") {
		t.Errorf("unsigned bundle: %v", err)
	}
}

// TestSeekTableLies: a table that moves cuts, swaps sizes or adds a
// frame is refused even when its own framing is intact.
func TestSeekTableLies(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t)
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, nil, 0)
	data := mustRead(t, good)
	frames, err := readSeekTable(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	body := data[:frames[len(frames)-1].cOff+frames[len(frames)-1].cSize]
	lies := map[string]func([]frame) []frame{
		"compressed sizes swapped": func(fs []frame) []frame { fs[1].cSize, fs[2].cSize = fs[2].cSize, fs[1].cSize; return fs },
		"cut moved by a block":     func(fs []frame) []frame { fs[2].dSize += 512; fs[3].dSize -= 512; return fs },
		"uncompressed sizes swapped": func(fs []frame) []frame {
			fs[0].dSize, fs[len(fs)-1].dSize = fs[len(fs)-1].dSize, fs[0].dSize
			return fs
		},
		"frame split in two": func(fs []frame) []frame {
			return append(fs[:1:1], append([]frame{{cSize: fs[1].cSize, dSize: 1}}, fs[1:]...)...)
		},
	}
	for name, lie := range lies {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, appendSeekTable(append([]byte(nil), body...), lie(append([]frame(nil), frames...))), 0o644)
		if _, err := Verify(context.Background(), p, VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Verify = %v", name, err)
		}
		if err := readAll(mustRead(t, p)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: read = %v", name, err)
		}
	}
	// A table claiming more frames than the file could hold.
	bad := append([]byte(nil), data...)
	binary.LittleEndian.PutUint32(bad[len(bad)-9:], 1<<30)
	if err := readAll(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("huge frame count: %v", err)
	}
}

// TestFramesFollowEntries: every entry starts a frame and no frame holds
// more than FrameSize bytes, so one blob is read alone.
func TestFramesFollowEntries(t *testing.T) {
	f := newFixture(t)
	big := make([]byte, 3*FrameSize+12345)
	rand.New(rand.NewSource(4)).Read(big)
	f.addImage(t, "pseven-big", ocispec.MediaTypeImageLayerGzip, big)
	p := filepath.Join(t.TempDir(), "b.tar.zst")
	res := f.write(t, p, nil, 0)
	a, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if res.Frames != len(a.frames) {
		t.Errorf("Write says %d frames, the table has %d", res.Frames, len(a.frames))
	}
	starts := map[int64]bool{}
	for _, fr := range a.frames {
		starts[fr.dOff] = true
		if fr.dSize > FrameSize {
			t.Errorf("frame at %d holds %d bytes", fr.dOff, fr.dSize)
		}
	}
	for _, s := range a.layout.spans {
		if !starts[s.start] {
			t.Errorf("entry %s does not start a frame", s.name)
		}
	}
	// The incompressible layer took 4 frames and stayed about its size.
	if n := (int64(len(big)) + FrameSize) / FrameSize; len(a.frames) < int(n)+len(a.layout.spans) {
		t.Errorf("%d frames for %d entries and a %d-byte layer", len(a.frames), len(a.layout.spans), len(big))
	}
}

// TestArchiveChangedAfterCheck: a file rewritten in place after its table
// of contents was checked (by another bundle signed with the same key)
// yields errors, never its blobs.
func TestArchiveChangedAfterCheck(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	p := filepath.Join(dir, "b.tar.zst")
	newFixture(t).write(t, p, s, 0)
	other := newFixture(t)
	other.blobs = map[digest.Digest][]byte{}
	other.manifest.Blobs, other.manifest.Images = nil, nil
	other.addImage(t, "pseven-app", ocispec.MediaTypeImageLayerGzip, []byte("another month's layer, much the same size as the first"))
	o := filepath.Join(dir, "o.tar.zst")
	other.write(t, o, s, 0)
	a, err := OpenVerified(p, v)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := os.WriteFile(p, mustRead(t, o), 0o644); err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, b := range a.Manifest().Blobs {
		r, err := a.Blob(b.Digest)
		if err == nil {
			_, err = io.Copy(io.Discard, r)
			r.Close()
		}
		if err == nil {
			read++
		}
	}
	if read != 0 {
		t.Fatalf("%d blobs of the checked bundle read as good from the swapped file", read)
	}
}

// TestSplitPartOfTheSameSizeFromAnotherBuild: two builds whose parts have
// the same sizes (random layers of equal length); a part swapped between
// them passes the size check and is still refused, by verify and by the
// install read, and Join refuses to write it.
func TestSplitPartOfTheSameSizeFromAnotherBuild(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	var paths []string
	for i := range 2 {
		f := newFixture(t)
		layer := make([]byte, 3*MinSplitSize)
		rand.New(rand.NewSource(int64(i))).Read(layer)
		f.addImage(t, "pseven-big", ocispec.MediaTypeImageLayerGzip, layer)
		p := filepath.Join(dir, strconv.Itoa(i), "b.tar.zst")
		os.MkdirAll(filepath.Dir(p), 0o755)
		res, err := Write(context.Background(), p, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open, Signer: s, SplitSize: MinSplitSize})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Parts) < 3 {
			t.Fatalf("%d parts", len(res.Parts))
		}
		paths = append(paths, p)
	}
	a, b := paths[0], paths[1]
	if st1, st2 := mustStat(t, a+".002"), mustStat(t, b+".002"); st1.Size() != st2.Size() {
		t.Skipf("parts differ in size (%d, %d): the size check covers this", st1.Size(), st2.Size())
	}
	for _, p := range []string{a + ".001", a + ".parts.json", a} {
		if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); err != nil {
			t.Fatalf("good split bundle via %s: %v", p, err)
		}
	}
	os.WriteFile(a+".002", mustRead(t, b+".002"), 0o644)
	if _, err := Verify(context.Background(), a+".001", VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify with a foreign part = %v", err)
	}
	if err := readVerified(a+".001", v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("install read with a foreign part = %v", err)
	}
	if _, err := Join(a+".001", filepath.Join(dir, "joined"), false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Join with a foreign part = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "joined")); err == nil {
		t.Error("Join left a file at its output")
	}
}

func mustStat(t testing.TB, p string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
