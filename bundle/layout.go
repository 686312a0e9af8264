package bundle

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// FrameSize is the most uncompressed bytes one zstd frame holds. Frames
// start at every entry and are cut every FrameSize bytes inside an entry,
// so one blob is read by decoding only its own frames. Part of the format:
// changing it changes the bytes.
const FrameSize = 4 << 20

// tarTrailer is the end-of-archive marker: two zero blocks.
const tarTrailer = 2 * 512

// span is one entry of the tar stream: its header, data and padding.
type span struct {
	name      string
	start     int64 // offset of the header in the tar stream
	headerLen int64
	size      int64 // data bytes
	end       int64 // start of the next entry
	raw       bool  // already-compressed content: stored, not entropy-coded
	blob      int   // index into Manifest.Blobs, -1 for other entries
}

func (s span) data() int64 { return s.start + s.headerLen }

// cut is the end of one frame in the tar stream.
type cut struct {
	end int64
	raw bool
}

// layout is where every byte of a bundle's tar stream goes. It follows
// from the manifest alone (entry order, sizes and canonical headers are
// fixed), so writer and reader compute the same one and a seek table that
// disagrees with it is corrupt.
type layout struct {
	spans   []span
	blobs   map[digest.Digest]int // blob digest -> index into spans
	trailer int64                 // offset of the end-of-archive blocks
	total   int64
	mtime   time.Time
}

func (l *layout) entry(name string) span {
	for _, s := range l.spans {
		if s.name == name {
			return s
		}
	}
	panic("bundle: no entry " + name)
}

// planLayout lays out the entries of docs/FORMAT.md: manifest, TOC
// signature, chart, oci-layout, the blobs not omitted, index.json.
func planLayout(m *Manifest, manifestSize, sigSize int64, mtime time.Time) (*layout, error) {
	idx, err := LayoutIndex(m)
	if err != nil {
		return nil, err
	}
	l := &layout{blobs: map[digest.Digest]int{}, mtime: mtime}
	var off int64
	add := func(name string, size int64, raw bool, blob int) error {
		h, err := headerBytes(name, size, mtime)
		if err != nil {
			return err
		}
		s := span{name: name, start: off, headerLen: int64(len(h)), size: size, raw: raw, blob: blob}
		s.end = s.data() + (size+511)/512*512
		off = s.end
		l.spans = append(l.spans, s)
		return nil
	}
	if err := add(ManifestEntry, manifestSize, false, -1); err != nil {
		return nil, err
	}
	if err := add(TOCSignatureEntry, sigSize, false, -1); err != nil {
		return nil, err
	}
	if err := add(m.Chart.Path, m.Chart.Size, true, -1); err != nil {
		return nil, err
	}
	if err := add(OCILayoutEntry, int64(len(layoutFile())), false, -1); err != nil {
		return nil, err
	}
	for i, b := range m.Blobs {
		if b.Omitted {
			continue
		}
		l.blobs[b.Digest] = len(l.spans)
		if err := add(BlobPath(b.Digest), b.Size, compressedMediaType(b.MediaType), i); err != nil {
			return nil, err
		}
	}
	if err := add(IndexEntry, int64(len(idx)), false, -1); err != nil {
		return nil, err
	}
	l.trailer = off
	l.total = off + tarTrailer
	return l, nil
}

// cuts are the frame ends: every entry starts a frame, and a frame ends
// FrameSize bytes after its start or at the end of its entry.
func (l *layout) cuts() []cut {
	var out []cut
	for _, s := range l.spans {
		for off := s.start; off < s.end; off += FrameSize {
			out = append(out, cut{end: min(off+FrameSize, s.end), raw: s.raw})
		}
	}
	return append(out, cut{end: l.total})
}

// headerBytes is the canonical tar header of an entry, byte for byte.
func headerBytes(name string, size int64, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(canonicalHeader(name, size, mtime)); err != nil {
		return nil, fmt.Errorf("tar header for %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

func canonicalHeader(name string, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	}
}

// compressedMediaType reports layers that are already compressed (gzip or
// zstd): recompressing them gains nothing, so their frames are raw.
func compressedMediaType(mt string) bool {
	return strings.HasSuffix(mt, "+gzip") || strings.HasSuffix(mt, "+zstd") ||
		strings.HasSuffix(mt, ".tar.gzip") || strings.HasSuffix(mt, ".tar.zstd")
}
