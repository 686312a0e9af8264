package bundle

import (
	"bytes"
	"io"
	"math/rand"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRawFramesDecodeEverywhere: raw frames of every block boundary decode
// to their input with klauspost's decoder (as push and serve read them)
// and with the stock zstd CLI, checksum checked by both.
func TestRawFramesDecodeEverywhere(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(FrameSize), zstd.WithDecoderMaxWindow(FrameSize))
	defer dec.Close()
	var stream, want []byte
	for _, n := range []int{0, 1, rawBlockMax - 1, rawBlockMax, rawBlockMax + 1, 3*rawBlockMax + 17, FrameSize} {
		in := make([]byte, n)
		rng.Read(in)
		f := appendRawFrame(nil, in)
		if len(f) != rawFrameSize(n) {
			t.Errorf("%d bytes: frame of %d, rawFrameSize says %d", n, len(f), rawFrameSize(n))
		}
		got, err := dec.DecodeAll(f, nil)
		if err != nil || !bytes.Equal(got, in) {
			t.Errorf("%d bytes: klauspost decodes %d bytes, %v", n, len(got), err)
		}
		bad := append([]byte(nil), f...)
		bad[len(bad)-1] ^= 1
		if _, err := dec.DecodeAll(bad, nil); err == nil {
			t.Errorf("%d bytes: a wrong checksum decodes", n)
		}
		stream, want = append(stream, f...), append(want, in...)
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Fatalf("zstd CLI (Debian package zstd, `make test-deps`): %v", err)
	}
	cmd := exec.Command("zstd", "-d", "-c", "--no-progress")
	cmd.Stdin = bytes.NewReader(stream)
	got, err := cmd.Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("zstd -d: %d bytes of %d (%v)", len(got), len(want), err)
	}
}

// TestCompressedLayersAreStoredRaw: every frame of a gzip layer is a raw
// frame (the layer's bytes plus framing), other entries are compressed,
// the stock zstd CLI decodes the whole bundle to the same tar, and the
// bundle is the same at any concurrency.
func TestCompressedLayersAreStoredRaw(t *testing.T) {
	dir := t.TempDir()
	layer := make([]byte, 2*FrameSize+4321)
	rand.New(rand.NewSource(6)).Read(layer)
	var sums []string
	var data []byte
	for _, conc := range []int{1, 3} {
		f := newFixture(t)
		f.addImage(t, "pseven-big", ocispec.MediaTypeImageLayerGzip, layer)
		p := filepath.Join(dir, "b.tar.zst")
		sums = append(sums, f.write(t, p, nil, conc).Digest)
		data = mustRead(t, p)
	}
	if sums[0] != sums[1] {
		t.Fatalf("concurrency changed the bundle: %v", sums)
	}
	frames, err := readSeekTable(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	raw, compressed := 0, 0
	for _, fr := range frames {
		fd := data[fr.cOff : fr.cOff+fr.cSize]
		if fd[4] == rawFrameDescriptor && int(fr.cSize) == rawFrameSize(int(fr.dSize)) {
			raw++
			continue
		}
		compressed++
	}
	// The big layer spans 3 frames; the shared base and the own layers
	// are gzip-typed too, the chart is a .tgz.
	if raw < 3+3+1 || compressed < 3 {
		t.Errorf("%d raw and %d compressed frames of %d", raw, compressed, len(frames))
	}
	cmd := exec.Command("zstd", "-d", "-c", "--no-progress")
	cmd.Stdin = bytes.NewReader(data)
	got, err := cmd.Output()
	if err != nil || !bytes.Equal(got, decompress(t, data)) {
		t.Fatalf("zstd -d of the bundle: %d bytes (%v)", len(got), err)
	}
	if !bytes.Contains(got, layer) {
		t.Error("the decoded tar does not hold the layer")
	}
}

// TestRawFrameContentReadsInPlace: a raw frame's content comes out of the
// frame's own buffer, equal to what the decoder makes of it; a compressed
// frame, even one with the same header byte, goes to the decoder; a raw
// frame with a wrong checksum is corrupt; nothing malformed gets through.
func TestRawFrameContentReadsInPlace(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	for _, n := range []int{0, 1, rawBlockMax, rawBlockMax + 1, FrameSize} {
		in := make([]byte, n)
		rng.Read(in)
		frame := appendRawFrame(nil, in)
		want, _ := dec.DecodeAll(frame, nil)
		got, ok, err := rawFrameContent(append([]byte(nil), frame...), int64(n))
		if !ok || err != nil || !bytes.Equal(got, want) || !bytes.Equal(got, in) {
			t.Errorf("%d bytes: ok %v, %v, equal %v", n, ok, err, bytes.Equal(got, in))
		}
		if n == 0 {
			continue
		}
		bad := append([]byte(nil), frame...)
		bad[len(bad)-5] ^= 4 // the last content byte
		if _, ok, err := rawFrameContent(bad, int64(n)); !ok || err == nil {
			t.Errorf("%d bytes, a byte flipped: ok %v, %v", n, ok, err)
		}
		if _, ok, _ := rawFrameContent(append([]byte(nil), frame...), int64(n+1)); ok {
			t.Errorf("%d bytes: taken as raw with the wrong content size", n)
		}
		if _, ok, _ := rawFrameContent(append([]byte(nil), frame[:len(frame)-1]...), int64(n)); ok {
			t.Errorf("%d bytes: a truncated frame taken as raw", n)
		}
	}
	// Compressible input: klauspost writes the same header byte (4-byte
	// content size, single segment, checksum) but compressed blocks.
	text := bytes.Repeat([]byte("pseven enterprise "), FrameSize/18)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(FrameSize))
	frame := enc.EncodeAll(text, nil)
	if frame[4] != rawFrameDescriptor {
		t.Logf("klauspost's header byte is %#x here", frame[4])
	}
	if _, ok, err := rawFrameContent(frame, int64(len(text))); ok {
		t.Errorf("a compressed frame taken as raw (%v)", err)
	}
}

// TestRawLayerReadNeedsOneFrameBuffer: reading a gzip layer of several
// frames takes the compressed-frame buffer only, not a second 4 MiB one
// to decode into (serve and push read 8 and more blobs at once). Each try
// opens the bundle afresh (its buffer pools are its own); the least of
// five counts, as under -race sync.Pool drops a quarter of what is put back.
func TestRawLayerReadNeedsOneFrameBuffer(t *testing.T) {
	f := newFixture(t)
	layer := make([]byte, 3*FrameSize)
	rand.New(rand.NewSource(8)).Read(layer)
	f.addImage(t, "pseven-big", ocispec.MediaTypeImageLayerGzip, layer)
	out := filepath.Join(t.TempDir(), "b.tar.zst")
	f.write(t, out, nil, 0)
	d := digest.FromBytes(layer)
	least := uint64(1 << 62)
	for range 5 {
		a, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := a.Blob(d)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		runtime.ReadMemStats(&after)
		a.Close()
		if err != nil || n != int64(len(layer)) {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if least > FrameSize+FrameSize/2 {
		t.Errorf("reading a raw-framed layer allocated %d bytes, want one frame buffer (%d)", least, maxFrameCompressed)
	}
}
