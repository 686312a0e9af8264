package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxWindow bounds decoder memory on hostile input; frames are FrameSize.
const maxWindow = 2 * FrameSize

// maxFrameCompressed bounds one frame's compressed size: zstd never
// expands FrameSize bytes by more than a few KiB.
const maxFrameCompressed = FrameSize + 64<<10

// smallFrame: frames up to this size (the head, metadata, small blobs) get
// buffers of their own size; a pooled 4 MiB buffer costs a cold process
// page faults and clearing that dwarf reading a 2 KiB manifest.
const smallFrame = 256 << 10

// maxTOCSignature bounds the signature entry.
const maxTOCSignature = 4 << 10

// Archive is an opened bundle: read through its seek table, any entry
// alone, each checked against the manifest while it is read. The manifest
// is what the table of contents signature covers; check it with VerifyTOC
// before trusting anything.
type Archive struct {
	files    *bundleFiles
	ra       *multiFile
	frames   []frame
	dec      *zstd.Decoder
	layout   *layout
	manifest *Manifest
	raw      []byte // the manifest entry as stored
	tocSig   []byte
	bufs     sync.Pool // decoded frames, cap FrameSize
	cbufs    sync.Pool // compressed frames, cap maxFrameCompressed
}

// Open opens the bundle at path (a split bundle by any of its parts or
// its parts.json), reads its seek table and manifest, and checks that the
// table agrees with the layout the manifest implies.
func Open(path string) (*Archive, error) {
	bf, err := resolveFiles(path)
	if err != nil {
		return nil, err
	}
	a, err := open(bf)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return a, nil
}

func open(bf *bundleFiles) (*Archive, error) {
	ra, err := bf.open()
	if err != nil {
		return nil, err
	}
	return openFrom(bf, ra)
}

func openFrom(bf *bundleFiles, ra *multiFile) (*Archive, error) {
	a := &Archive{files: bf, ra: ra}
	if err := a.load(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Archive) load() (err error) {
	ra := a.ra
	if a.frames, err = readSeekTable(ra, ra.size); err != nil {
		return err
	}
	for i, f := range a.frames {
		if f.cSize > maxFrameCompressed {
			return fmt.Errorf("%w: seek table: frame %d claims %d compressed bytes", ErrCorrupt, i, f.cSize)
		}
	}
	a.dec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(FrameSize), zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return err
	}
	a.bufs.New = func() any { return make([]byte, 0, FrameSize) }
	a.cbufs.New = func() any { return make([]byte, 0, maxFrameCompressed) }
	return a.readHead()
}

// readHead decodes the manifest and the TOC signature, lays out the rest
// and holds the seek table and both headers to it.
func (a *Archive) readHead() error {
	last := a.frames[len(a.frames)-1]
	total := last.dOff + last.dSize
	head := a.section(0, total)
	defer head.release()
	tr := tar.NewReader(head)
	next := func(name string, limit int64) ([]byte, error) {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: reading entry %s: %v", ErrCorrupt, name, err)
		}
		if hdr.Name != name {
			return nil, fmt.Errorf("%w: unexpected entry %q where %s belongs", ErrCorrupt, hdr.Name, name)
		}
		if hdr.Size < 0 || hdr.Size > limit {
			return nil, fmt.Errorf("%w: entry %s claims %d bytes (limit %d)", ErrCorrupt, name, hdr.Size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(tr, hdr.Size))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		return b, nil
	}
	raw, err := next(ManifestEntry, maxManifestBytes)
	if err != nil {
		return err
	}
	m, err := DecodeManifest(raw)
	if err != nil {
		return err
	}
	sig, err := next(TOCSignatureEntry, maxTOCSignature)
	if err != nil {
		return err
	}
	mtime := time.Unix(0, 0)
	if m.Created != "" {
		if mtime, err = time.Parse(time.RFC3339, m.Created); err != nil {
			return fmt.Errorf("%w: %s: created %q: %v", ErrCorrupt, ManifestEntry, m.Created, err)
		}
	}
	l, err := planLayout(m, int64(len(raw)), int64(len(sig)), mtime)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	cuts := l.cuts()
	if len(cuts) != len(a.frames) {
		return fmt.Errorf("%w: seek table lists %d frames, the manifest implies %d", ErrCorrupt, len(a.frames), len(cuts))
	}
	for i, c := range cuts {
		if f := a.frames[i]; f.dOff+f.dSize != c.end {
			return fmt.Errorf("%w: seek table: frame %d ends at %d, the manifest implies %d", ErrCorrupt, i, f.dOff+f.dSize, c.end)
		}
	}
	a.manifest, a.raw, a.tocSig, a.layout = m, raw, sig, l
	for _, s := range l.spans[:2] {
		if err := a.checkHeader(s); err != nil {
			return err
		}
	}
	return nil
}

// Path is the bundle's name: the file, or what a split bundle's parts join into.
func (a *Archive) Path() string { return a.files.path }

// Manifest is the bundle manifest; trust it only once VerifyTOC holds.
func (a *Archive) Manifest() *Manifest { return a.manifest }

// VerifyTOC checks the table of contents signature: the manifest, which
// names the digest and size of everything else, is the key's.
func (a *Archive) VerifyTOC(v Verifier) error {
	if len(a.tocSig) == 0 {
		return fmt.Errorf("%w: bundle %s is unsigned (built without --key)", ErrSignature, a.Path())
	}
	sum := sha256.Sum256(a.raw)
	if err := v.VerifyDigest(sum[:], string(a.tocSig)); err != nil {
		return fmt.Errorf("bundle %s: table of contents: %w", a.Path(), err)
	}
	return nil
}

// Close releases the files and the decoder.
func (a *Archive) Close() error {
	if a.dec != nil {
		a.dec.Close()
	}
	return a.ra.Close()
}

// Chart returns the chart archive, checked against the manifest's digest.
func (a *Archive) Chart() ([]byte, error) {
	s := a.layout.entry(a.manifest.Chart.Path)
	return a.readEntry(s, a.manifest.Chart.Digest)
}

// Blob opens a blob of the bundle. Reading it to the end verifies it: a
// digest or size mismatch is returned instead of io.EOF.
func (a *Archive) Blob(d digest.Digest) (*EntryReader, error) {
	i, ok := a.layout.blobs[d]
	if !ok {
		return nil, fmt.Errorf("%w: blob %s is not carried by this bundle", ErrCorrupt, d)
	}
	return a.openEntry(a.layout.spans[i], d)
}

// readEntry reads a whole (small) entry and checks its digest when want is set.
func (a *Archive) readEntry(s span, want digest.Digest) ([]byte, error) {
	r, err := a.openEntry(s, want)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// EntryReader streams one entry's data and verifies it at the end. It is
// safe to Close while a Read runs: an HTTP transport may still read a
// request body after the request returned.
type EntryReader struct {
	mu       sync.Mutex
	closed   bool
	a        *Archive
	s        span
	sec      *section
	h        hash.Hash
	want     digest.Digest
	read     int64
	err      error
	verified bool
}

func (a *Archive) openEntry(s span, want digest.Digest) (*EntryReader, error) {
	if err := a.checkHeader(s); err != nil {
		return nil, err
	}
	return &EntryReader{a: a, s: s, sec: a.section(s.data(), s.end), h: sha256.New(), want: want}, nil
}

func (e *EntryReader) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, errEntryClosed
	}
	if e.err != nil {
		return 0, e.err
	}
	if rest := e.s.size - e.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	if len(p) == 0 {
		e.err = e.finish()
		if e.err == nil {
			e.err = io.EOF
		}
		return 0, e.err
	}
	n, err := e.sec.Read(p)
	e.h.Write(p[:n])
	e.read += int64(n)
	if err == io.EOF {
		err = fmt.Errorf("%w: %s: %d bytes, expected %d", ErrCorrupt, e.s.name, e.read, e.s.size)
	}
	if err != nil {
		e.err = err
	}
	return n, err
}

// finish checks the digest and that the padding up to the next entry is zeros.
func (e *EntryReader) finish() error {
	if e.want != "" {
		if got := digest.NewDigestFromBytes(digest.SHA256, e.h.Sum(nil)); got != e.want {
			return fmt.Errorf("%w: %s: digest mismatch: expected %s, got %s", ErrCorrupt, e.s.name, e.want, got)
		}
	}
	pad, err := io.ReadAll(e.sec)
	if err != nil {
		return err
	}
	if int64(len(pad)) != e.s.end-e.s.data()-e.s.size || !allZero(pad) {
		return fmt.Errorf("%w: %s: padding is not zeros", ErrCorrupt, e.s.name)
	}
	e.verified = true
	return nil
}

var errEntryClosed = errors.New("bundle entry reader closed")

// Verified reports whether the entry was read to its end and matched.
func (e *EntryReader) Verified() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.verified
}

// Close returns the decode buffers; later Reads fail.
func (e *EntryReader) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.closed = true
		e.sec.release()
	}
	return nil
}

// checkHeader insists an entry's tar header is the canonical one, byte
// for byte: name, size, mode, owner and mtime are fixed by the format.
func (a *Archive) checkHeader(s span) error {
	want, err := headerBytes(s.name, s.size, a.layout.mtime)
	if err != nil {
		return err
	}
	sec := a.section(s.start, s.data())
	defer sec.release()
	got, err := io.ReadAll(sec)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: entry %s: tar header is not the canonical one", ErrCorrupt, s.name)
	}
	return nil
}

// Metadata reads every image manifest and index the bundle carries,
// verified, and checks that they name only blobs of the manifest (with
// the same sizes) and that each image lists exactly the blobs its
// manifests name.
func (a *Archive) Metadata() (map[digest.Digest][]byte, error) {
	meta := map[digest.Digest][]byte{}
	for _, b := range a.manifest.Blobs {
		if b.Omitted || (!IsManifest(b.MediaType) && !IsIndex(b.MediaType)) {
			continue
		}
		data, err := a.readEntry(a.layout.spans[a.layout.blobs[b.Digest]], b.Digest)
		if err != nil {
			return nil, err
		}
		if err := checkChildren(a.manifest, b, data); err != nil {
			return nil, err
		}
		meta[b.Digest] = data
	}
	if err := checkImageBlobs(a.manifest, meta); err != nil {
		return nil, err
	}
	return meta, nil
}

// CheckStructure reads what is not a blob: the manifest and signature
// entries, chart, oci-layout, index.json and the end of the tar stream.
func (a *Archive) CheckStructure() error {
	m := a.manifest
	l := a.layout
	idx, err := LayoutIndex(m)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		name string
		want []byte
	}{{ManifestEntry, a.raw}, {TOCSignatureEntry, a.tocSig}, {OCILayoutEntry, layoutFile()}, {IndexEntry, idx}} {
		got, err := a.readEntry(l.entry(c.name), "")
		if err != nil {
			return err
		}
		if !bytes.Equal(got, c.want) {
			return fmt.Errorf("%w: %s is not what the manifest implies", ErrCorrupt, c.name)
		}
	}
	if _, err := a.Chart(); err != nil {
		return err
	}
	sec := a.section(l.trailer, l.total)
	defer sec.release()
	tail, err := io.ReadAll(sec)
	if err != nil {
		return err
	}
	if int64(len(tail)) != tarTrailer || !allZero(tail) {
		return fmt.Errorf("%w: the tar stream does not end after %s", ErrCorrupt, IndexEntry)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// section reads the tar stream from off to end, decoding one frame at a time.
type section struct {
	a        *Archive
	off, end int64
	data     []byte // the frame starting at bufOff: in buf, or in cbuf for a raw frame
	bufOff   int64
	buf      []byte // decoded frames
	cbuf     []byte
}

func (a *Archive) section(off, end int64) *section {
	return &section{a: a, off: off, end: end, bufOff: -1}
}

func (s *section) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	if s.bufOff < 0 || s.off < s.bufOff || s.off >= s.bufOff+int64(len(s.data)) {
		if err := s.load(); err != nil {
			return 0, err
		}
	}
	from := s.off - s.bufOff
	to := min(int64(len(s.data)), s.end-s.bufOff)
	n := copy(p, s.data[from:to])
	s.off += int64(n)
	return n, nil
}

// load decodes the frame holding s.off and insists it decodes to exactly
// the size the seek table gives.
func (s *section) load() error {
	fs := s.a.frames
	i := sort.Search(len(fs), func(i int) bool { return fs[i].dOff+fs[i].dSize > s.off })
	if i == len(fs) {
		return fmt.Errorf("%w: offset %d is past the last frame", ErrCorrupt, s.off)
	}
	f := fs[i]
	s.data, s.bufOff = nil, -1
	if int64(cap(s.cbuf)) < f.cSize {
		s.putCompressed()
		if f.cSize <= smallFrame {
			s.cbuf = make([]byte, 0, f.cSize)
		} else {
			s.cbuf = s.a.cbufs.Get().([]byte)
		}
	}
	s.cbuf = s.cbuf[:f.cSize]
	if _, err := s.a.ra.ReadAt(s.cbuf, f.cOff); err != nil {
		return fmt.Errorf("reading frame %d of bundle %s: %w", i, s.a.Path(), err)
	}
	// Already-compressed layers are stored raw: their bytes are read in place.
	if content, ok, err := rawFrameContent(s.cbuf, f.dSize); ok {
		if err != nil {
			return fmt.Errorf("%w: frame %d: %v", ErrCorrupt, i, err)
		}
		s.data, s.bufOff = content, f.dOff
		return nil
	}
	if int64(cap(s.buf)) < f.dSize {
		s.putBuf()
		if f.dSize <= FrameSize && f.dSize > smallFrame {
			s.buf = s.a.bufs.Get().([]byte)
		} else {
			s.buf = make([]byte, 0, f.dSize)
		}
	}
	out, err := s.a.dec.DecodeAll(s.cbuf, s.buf[:0])
	if err != nil {
		return fmt.Errorf("%w: frame %d: %v", ErrCorrupt, i, err)
	}
	if int64(len(out)) != f.dSize {
		return fmt.Errorf("%w: frame %d decodes to %d bytes, the seek table says %d", ErrCorrupt, i, len(out), f.dSize)
	}
	s.buf = out
	s.data, s.bufOff = out, f.dOff
	return nil
}

func (s *section) release() {
	s.putBuf()
	s.putCompressed()
}

func (s *section) putCompressed() {
	if cap(s.cbuf) == maxFrameCompressed {
		s.a.cbufs.Put(s.cbuf[:0])
	}
	s.cbuf, s.data, s.bufOff = nil, nil, -1
}

func (s *section) putBuf() {
	if cap(s.buf) == FrameSize {
		s.a.bufs.Put(s.buf[:0])
	}
	s.buf, s.data, s.bufOff = nil, nil, -1
}

// checkChildren insists that every descriptor a manifest or index names
// is a blob of the bundle (carried or left to the base) of that size.
func checkChildren(m *Manifest, b Blob, data []byte) error {
	var doc struct {
		MediaType string               `json:"mediaType"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, b.Digest, err)
	}
	if doc.MediaType != "" && doc.MediaType != b.MediaType {
		return fmt.Errorf("%w: manifest %s: media type %q, bundle says %q", ErrCorrupt, b.Digest, doc.MediaType, b.MediaType)
	}
	var children []ocispec.Descriptor
	if IsIndex(b.MediaType) {
		children = doc.Manifests
	} else {
		if doc.Config == nil {
			return fmt.Errorf("%w: manifest %s has no config", ErrCorrupt, b.Digest)
		}
		children = append([]ocispec.Descriptor{*doc.Config}, doc.Layers...)
	}
	sizes := m.blobSizes()
	for _, c := range children {
		size, ok := sizes[c.Digest]
		if !ok {
			return fmt.Errorf("%w: manifest %s references %s, which is not in the bundle", ErrCorrupt, b.Digest, c.Digest)
		}
		if size != c.Size {
			return fmt.Errorf("%w: manifest %s says %s has %d bytes, bundle has %d", ErrCorrupt, b.Digest, c.Digest, c.Size, size)
		}
	}
	return nil
}

func (m *Manifest) blobSizes() map[digest.Digest]int64 {
	sizes := make(map[digest.Digest]int64, len(m.Blobs))
	for _, b := range m.Blobs {
		sizes[b.Digest] = b.Size
	}
	return sizes
}

// checkImageBlobs insists each image's blob list is exactly the graph its
// manifests describe, so the installer's use of it is sound. An image
// whose manifests the base carries is checked at the site instead.
func checkImageBlobs(m *Manifest, meta map[digest.Digest][]byte) error {
	omittedMeta := map[digest.Digest]bool{}
	for _, b := range m.Blobs {
		if b.Omitted && (IsManifest(b.MediaType) || IsIndex(b.MediaType)) {
			omittedMeta[b.Digest] = true
		}
	}
next:
	for _, img := range m.Images {
		for _, d := range img.Blobs {
			if omittedMeta[d] {
				continue next
			}
		}
		graph := map[digest.Digest]bool{}
		var walk func(d digest.Digest) error
		walk = func(d digest.Digest) error {
			if graph[d] {
				return nil
			}
			graph[d] = true
			data, ok := meta[d]
			if !ok {
				return nil // a layer or config
			}
			var doc struct {
				Config    *ocispec.Descriptor  `json:"config"`
				Layers    []ocispec.Descriptor `json:"layers"`
				Manifests []ocispec.Descriptor `json:"manifests"`
			}
			if err := json.Unmarshal(data, &doc); err != nil {
				return err
			}
			children := append(doc.Layers, doc.Manifests...)
			if doc.Config != nil {
				children = append(children, *doc.Config)
			}
			for _, c := range children {
				if err := walk(c.Digest); err != nil {
					return err
				}
			}
			return nil
		}
		if err := walk(img.Digest); err != nil {
			return fmt.Errorf("%w: image %s: %v", ErrCorrupt, img.Ref, err)
		}
		if len(graph) != len(img.Blobs) {
			return fmt.Errorf("%w: image %s: lists %d blobs, its manifests name %d", ErrCorrupt, img.Ref, len(img.Blobs), len(graph))
		}
		for _, d := range img.Blobs {
			if !graph[d] {
				return fmt.Errorf("%w: image %s: lists blob %s that its manifests do not name", ErrCorrupt, img.Ref, d)
			}
		}
	}
	return nil
}

// Err is the error that ended reading the entry, nil while it is fine.
func (e *EntryReader) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == io.EOF {
		return nil
	}
	return e.err
}
