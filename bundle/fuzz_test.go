package bundle

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func validBundle(f *testing.F) []byte {
	fx := newFixture(f)
	p := filepath.Join(f.TempDir(), "b.tar.zst")
	fx.write(f, p, nil, 0)
	return mustRead(f, p)
}

type bytesFile struct{ *bytes.Reader }

func (bytesFile) Close() error { return nil }

// openBytes opens an in-memory archive.
func openBytes(data []byte) (*Archive, error) {
	return openFrom(&bundleFiles{path: "memory"}, &multiFile{files: []readerAtCloser{bytesFile{bytes.NewReader(data)}}, offs: []int64{0}, size: int64(len(data))})
}

// readAll opens an in-memory archive and reads everything in it; it must
// never panic, hang or allocate beyond the reader's limits.
func readAll(data []byte) error {
	a, err := openBytes(data)
	if err != nil {
		return err
	}
	defer a.Close()
	return readEverything(a)
}

// readEverything reads every entry, as verify (and a first push) does, to
// the end or the first error.
func readEverything(a *Archive) error {
	if _, err := a.Metadata(); err != nil {
		return err
	}
	if err := a.CheckStructure(); err != nil {
		return err
	}
	for _, b := range a.Manifest().Blobs {
		if b.Omitted {
			continue
		}
		r, err := a.Blob(b.Digest)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// frameTar compresses a tar stream as the writer frames it: a frame at
// every entry header and every FrameSize bytes, then the seek table.
func frameTar(raw []byte) []byte {
	starts := []int{0}
	cr := &countingReader{r: bytes.NewReader(raw)}
	tr := tar.NewReader(cr)
	for {
		if _, err := tr.Next(); err != nil {
			break
		}
		// The header has just been read; its entry started one block before.
		if at := cr.n - 512; at > starts[len(starts)-1] {
			starts = append(starts, at)
		}
	}
	var chunks [][]byte
	starts = append(starts, len(raw))
	for i := 0; i+1 < len(starts); i++ {
		for off := starts[i]; off < starts[i+1]; off += FrameSize {
			chunks = append(chunks, raw[off:min(off+FrameSize, starts[i+1])])
		}
	}
	return frameChunks(chunks)
}

// reframe compresses raw with the frame cuts of the archive original.
func reframe(t testing.TB, original, raw []byte) []byte {
	t.Helper()
	frames, err := readSeekTable(bytes.NewReader(original), int64(len(original)))
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	for _, f := range frames {
		chunks = append(chunks, raw[f.dOff:f.dOff+f.dSize])
	}
	return frameChunks(chunks)
}

// frameChunks compresses each chunk as one frame and appends the seek table.
func frameChunks(chunks [][]byte) []byte {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	var out []byte
	var frames []frame
	for _, c := range chunks {
		z := enc.EncodeAll(c, nil)
		frames = append(frames, frame{cSize: int64(len(z)), dSize: int64(len(c))})
		out = append(out, z...)
	}
	return appendSeekTable(out, frames)
}

// FuzzReader feeds arbitrary files to the archive reader.
func FuzzReader(f *testing.F) {
	f.Add(validBundle(f))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, data []byte) {
		readAll(data)
	})
}

// FuzzReaderTar feeds arbitrary tar streams (framed here), so the fuzzer
// explores the archive checks rather than zstd's.
func FuzzReaderTar(f *testing.F) {
	dec, _ := zstd.NewReader(bytes.NewReader(validBundle(f)))
	raw, _ := io.ReadAll(dec)
	dec.Close()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		readAll(frameTar(data))
	})
}

// FuzzDecodeManifest: whatever parses must survive a round trip unchanged.
func FuzzDecodeManifest(f *testing.F) {
	fx := newFixture(f)
	fx.manifest.Normalize()
	good, _ := fx.manifest.Encode()
	f.Add(good)
	f.Add([]byte(`{"mediaType":"application/vnd.p7bundle.manifest.v2+json","formatVersion":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := DecodeManifest(enc)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		enc2, _ := m2.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
	})
}
