package bundle

import (
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

// readAll walks a bundle stream to the end or the first error; it must
// never panic, hang or allocate beyond the reader's limits.
func readAll(r io.Reader) {
	br, err := NewReader(r)
	if err != nil {
		return
	}
	defer br.Close()
	for i := 0; i < 1<<16; i++ {
		e, err := br.Next()
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, e); err != nil {
			return
		}
	}
}

// FuzzReader feeds arbitrary compressed streams to the reader.
func FuzzReader(f *testing.F) {
	f.Add(validBundle(f))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, data []byte) {
		readAll(bytes.NewReader(data))
	})
}

// FuzzReaderTar feeds arbitrary tar streams (compressed here), so the
// fuzzer explores the archive checks rather than zstd's.
func FuzzReaderTar(f *testing.F) {
	dec, _ := zstd.NewReader(bytes.NewReader(validBundle(f)))
	raw, _ := io.ReadAll(dec)
	dec.Close()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		var z bytes.Buffer
		enc, _ := zstd.NewWriter(&z, zstd.WithEncoderConcurrency(1))
		enc.Write(data)
		enc.Close()
		readAll(&z)
	})
}

// FuzzDecodeManifest: whatever parses must survive a round trip unchanged.
func FuzzDecodeManifest(f *testing.F) {
	fx := newFixture(f)
	fx.manifest.Normalize()
	good, _ := fx.manifest.Encode()
	f.Add(good)
	f.Add([]byte(`{"mediaType":"application/vnd.p7bundle.manifest.v1+json","formatVersion":1}`))
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
