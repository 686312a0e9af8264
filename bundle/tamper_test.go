package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestTamperedArchivesFailSignature flips single bytes at 240 offsets spread
// over the whole file — zstd frame header, every stretch of the body, the
// last bytes — and also truncates, appends, and swaps signatures: every
// variant must fail verification.
func TestTamperedArchivesFailSignature(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	f := newFixture(t)
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, s, 0)
	data := mustRead(t, good)
	sig := mustRead(t, good+".sig")

	rng := rand.New(rand.NewSource(1))
	offsets := []int{0, 1, 2, 3, 4, 5, len(data) - 1, len(data) - 2, len(data) - 3, len(data) - 4}
	// Stratified: one offset in each of 230 equal slices of the file.
	slices := 230 * faultScale()
	for i := 0; i < slices; i++ {
		lo, hi := i*len(data)/slices, (i+1)*len(data)/slices
		offsets = append(offsets, lo+rng.Intn(max(hi-lo, 1)))
	}
	rejected := 0
	p := filepath.Join(dir, "t.tar.zst")
	os.WriteFile(p+".sig", sig, 0o644)
	for _, off := range offsets {
		b := append([]byte(nil), data...)
		b[off] ^= byte(1 << rng.Intn(8))
		os.WriteFile(p, b, 0o644)
		rep, err := Verify(context.Background(), p, VerifyOptions{Verifier: v})
		if !errors.Is(err, ErrSignature) || rep.SignatureVerified || rep.ContentVerified {
			t.Errorf("flip at %d/%d: Verify = %v", off, len(data), err)
			continue
		}
		rejected++
	}
	for i := 0; i < 20; i++ {
		n := rng.Intn(len(data))
		os.WriteFile(p, data[:n], 0o644)
		if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
			t.Errorf("truncated to %d: %v", n, err)
		} else {
			rejected++
		}
	}
	os.WriteFile(p, append(append([]byte(nil), data...), 0, 0, 0, 0), 0o644)
	if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
		t.Errorf("appended tail: %v", err)
	}
	// A signature of another bundle, and one by another key.
	other := filepath.Join(dir, "other.tar.zst")
	f2 := newFixture(t)
	f2.manifest.Tool.Version = "other"
	f2.write(t, other, s, 0)
	os.WriteFile(p, data, 0o644)
	os.WriteFile(p+".sig", mustRead(t, other+".sig"), 0o644)
	if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
		t.Errorf("signature of another bundle: %v", err)
	}
	s2, _ := testKeys(t, t.TempDir())
	sum := sha256.Sum256(data)
	otherSig, _ := s2.SignDigest(sum[:])
	os.WriteFile(p+".sig", []byte(otherSig), 0o644)
	if _, err := Verify(context.Background(), p, VerifyOptions{Verifier: v}); !errors.Is(err, ErrSignature) {
		t.Errorf("signature by another key: %v", err)
	}
	t.Logf("%d byte flips and truncations rejected, plus tail, foreign signature, other key", rejected)
}

// region is a byte range of the uncompressed tar.
type region struct {
	name     string
	from, to int
}

// tarRegions lists each entry's header and data ranges.
func tarRegions(t testing.TB, raw []byte) []region {
	t.Helper()
	var out []region
	cr := &countingReader{r: bytes.NewReader(raw)}
	tr := tar.NewReader(cr)
	for {
		before := cr.n
		h, err := tr.Next()
		if err == io.EOF {
			out = append(out, region{"end-of-archive", before, before + 1024})
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		dataStart := cr.n
		out = append(out, region{"header " + h.Name, dataStart - 512, dataStart})
		if h.Size > 0 {
			out = append(out, region{"data " + h.Name, dataStart, dataStart + int(h.Size)})
		}
		io.Copy(io.Discard, tr)
		// Padding to the next 512-byte block is skipped by every tar reader.
		cr.n = dataStart + (int(h.Size)+511)/512*512
		cr.r = bytes.NewReader(raw[cr.n:])
		tr = tar.NewReader(cr)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestTamperedContentFailsEvenWhenResigned flips bytes inside each region
// of the uncompressed archive, recompresses and signs it again with the
// right key (a compromised build host), and checks that the content checks
// alone reject every flip that changes what would be installed.
func TestTamperedContentFailsEvenWhenResigned(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	f := newFixture(t)
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, s, 0)
	dec, _ := zstd.NewReader(bytes.NewReader(mustRead(t, good)))
	raw, err := io.ReadAll(dec)
	dec.Close()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	p := filepath.Join(dir, "t.tar.zst")
	trials, rejected := 0, 0
	for _, r := range tarRegions(t, raw) {
		// The bundle manifest is trusted through the signature; a re-signed
		// manifest may say anything. Header padding and the unused tail of
		// the end-of-archive blocks carry nothing.
		if strings.HasSuffix(r.name, ManifestEntry) && strings.HasPrefix(r.name, "data") {
			continue
		}
		for i := 0; i < 8*faultScale(); i++ {
			off := r.from + rng.Intn(r.to-r.from)
			if strings.HasPrefix(r.name, "header") && !meaningfulHeaderByte(off-r.from) {
				continue
			}
			b := append([]byte(nil), raw...)
			b[off] ^= byte(1 << rng.Intn(8))
			z := reframe(t, mustRead(t, good), b)
			os.WriteFile(p, z, 0o644)
			sum := sha256.Sum256(z)
			sig, _ := s.SignDigest(sum[:])
			os.WriteFile(p+".sig", []byte(sig), 0o644)
			trials++
			rep, err := Verify(context.Background(), p, VerifyOptions{Verifier: v})
			if err == nil || !rep.SignatureVerified || rep.ContentVerified {
				t.Errorf("%s, flip at +%d: Verify = %v (report %+v)", r.name, off-r.from, err, rep)
				continue
			}
			rejected++
		}
	}
	t.Logf("%d re-signed content tamperings, %d rejected by the content checks", trials, rejected)
	if trials < 100 {
		t.Errorf("only %d trials", trials)
	}
}

// meaningfulHeaderByte: name, mode, uid, gid, size, mtime, checksum digits,
// type, magic/version, user/group names. The checksum field's terminator
// (byte 155) is not interpreted by tar readers.
func meaningfulHeaderByte(i int) bool {
	return (i < 155 || i == 156) || (i >= 257 && i < 329)
}

// faultScale multiplies trial counts: `make faults` sets P7BUNDLE_FAULT_SCALE.
func faultScale() int {
	n, err := strconv.Atoi(os.Getenv("P7BUNDLE_FAULT_SCALE"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}
