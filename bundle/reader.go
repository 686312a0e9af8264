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
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxWindow bounds decoder memory on hostile input; our writer uses 8 MiB.
const maxWindow = 128 << 20

// EntryKind says what an archive entry is.
type EntryKind int

const (
	KindChart EntryKind = iota + 1
	KindLayout
	KindBlob
	KindIndex
)

// Entry is one archive entry after the manifest. Reading it to the end
// verifies it: a digest mismatch is returned instead of io.EOF.
type Entry struct {
	Kind EntryKind
	Name string
	Size int64
	// Blob is set for KindBlob.
	Blob *Blob

	r        io.Reader
	h        hash.Hash
	want     digest.Digest // expected sha256 digest, "" when checked otherwise
	keep     *bytes.Buffer
	read     int64
	verified bool
	err      error
}

func (e *Entry) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	e.read += int64(n)
	e.h.Write(p[:n])
	if e.keep != nil {
		e.keep.Write(p[:n])
	}
	if err == io.EOF {
		if verr := e.verify(); verr != nil {
			e.err = verr
			return n, verr
		}
	} else if err != nil {
		err = fmt.Errorf("%w: %s: %v", ErrCorrupt, e.Name, err)
	}
	if err != nil {
		e.err = err
	}
	return n, err
}

func (e *Entry) verify() error {
	if e.verified {
		return nil
	}
	if e.read != e.Size {
		return fmt.Errorf("%w: %s: %d bytes, expected %d", ErrCorrupt, e.Name, e.read, e.Size)
	}
	if e.want != "" {
		if got := digest.NewDigestFromBytes(digest.SHA256, e.h.Sum(nil)); got != e.want {
			return fmt.Errorf("%w: %s: digest mismatch: expected %s, got %s", ErrCorrupt, e.Name, e.want, got)
		}
	}
	e.verified = true
	return nil
}

// Reader walks a bundle stream in its one permitted order, checking each
// entry against the manifest. It never seeks and holds only metadata.
type Reader struct {
	dec      *zstd.Decoder
	tr       *tar.Reader
	manifest *Manifest
	state    int // 0 chart, 1 oci-layout, 2 blobs, 3 index.json, 4 end
	blobIdx  int
	cur      *Entry
	mtime    time.Time                // every entry's mtime: epoch, or the manifest's created
	present  map[digest.Digest]Blob   // blobs read and verified so far
	meta     map[digest.Digest][]byte // manifests and indexes, to check image blob lists
	// omittedBlobs are the blobs a differential bundle leaves to its base.
	omittedBlobs map[digest.Digest]Blob
	done         bool
}

// NewReader decompresses r and reads and validates the bundle manifest.
// Close the Reader to release the decoder.
func NewReader(r io.Reader) (*Reader, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	br := &Reader{dec: dec, tr: tar.NewReader(dec), present: map[digest.Digest]Blob{}, meta: map[digest.Digest][]byte{}}
	// The manifest's own mtime is checked once its created field is known.
	br.mtime = time.Unix(0, 0)
	hdr, err := br.tr.Next()
	if err != nil {
		dec.Close()
		return nil, fmt.Errorf("%w: reading entry %s: %v", ErrCorrupt, ManifestEntry, err)
	}
	if hdr.Name != ManifestEntry || hdr.Typeflag != tar.TypeReg {
		dec.Close()
		return nil, fmt.Errorf("%w: unexpected entry %q where %s belongs", ErrCorrupt, hdr.Name, ManifestEntry)
	}
	if hdr.Size < 0 || hdr.Size > maxManifestBytes {
		dec.Close()
		return nil, fmt.Errorf("%w: entry %s claims %d bytes (limit %d)", ErrCorrupt, ManifestEntry, hdr.Size, maxManifestBytes)
	}
	data, err := io.ReadAll(io.LimitReader(br.tr, hdr.Size))
	if err != nil {
		dec.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, ManifestEntry, err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		dec.Close()
		return nil, err
	}
	br.manifest = m
	if m.Created != "" {
		t, err := time.Parse(time.RFC3339, m.Created)
		if err != nil {
			dec.Close()
			return nil, fmt.Errorf("%w: %s: created %q: %v", ErrCorrupt, ManifestEntry, m.Created, err)
		}
		br.mtime = t
	}
	if !hdr.ModTime.Equal(br.mtime) || hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 {
		dec.Close()
		return nil, fmt.Errorf("%w: entry %s has non-canonical metadata", ErrCorrupt, ManifestEntry)
	}
	return br, nil
}

// Manifest is the bundle manifest; trust it only once the signature holds.
func (r *Reader) Manifest() *Manifest { return r.manifest }

// Close releases the decoder's goroutines.
func (r *Reader) Close() { r.dec.Close() }

// Next finishes (and verifies) the current entry and returns the next one,
// or io.EOF after index.json once the stream is shown to end there.
func (r *Reader) Next() (*Entry, error) {
	if r.cur != nil {
		if err := r.finish(r.cur); err != nil {
			return nil, err
		}
		r.cur = nil
	}
	m := r.manifest
	for r.state == 2 && r.blobIdx < len(m.Blobs) && m.Blobs[r.blobIdx].Omitted {
		r.blobIdx++
	}
	if r.state == 2 && r.blobIdx >= len(m.Blobs) {
		r.state = 3
	}
	var e *Entry
	switch r.state {
	case 0:
		e = &Entry{Kind: KindChart, Name: m.Chart.Path, Size: m.Chart.Size, want: m.Chart.Digest}
	case 1:
		e = &Entry{Kind: KindLayout, Name: OCILayoutEntry, Size: -1, keep: &bytes.Buffer{}}
	case 2:
		b := m.Blobs[r.blobIdx]
		e = &Entry{Kind: KindBlob, Name: BlobPath(b.Digest), Size: b.Size, want: b.Digest, Blob: &b}
		if IsManifest(b.MediaType) || IsIndex(b.MediaType) {
			e.keep = &bytes.Buffer{}
		}
	case 3:
		e = &Entry{Kind: KindIndex, Name: IndexEntry, Size: -1, keep: &bytes.Buffer{}}
	default:
		if err := r.end(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	limit := int64(maxMetadataBytes)
	hdr, err := r.header(e.Name, e.Size, limit)
	if err != nil {
		return nil, err
	}
	e.Size = hdr.Size
	e.r = r.tr
	e.h = sha256.New()
	r.cur = e
	return e, nil
}

// header reads the next tar header and insists on a regular file with the
// expected name and size (size < 0: any size up to limit).
func (r *Reader) header(name string, size, limit int64) (*tar.Header, error) {
	hdr, err := r.tr.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: archive ends before %s", ErrCorrupt, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading entry %s: %v", ErrCorrupt, name, err)
	}
	if hdr.Name != name {
		return nil, fmt.Errorf("%w: unexpected entry %q where %s belongs", ErrCorrupt, hdr.Name, name)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: entry %s is not a regular file (type %q)", ErrCorrupt, name, hdr.Typeflag)
	}
	// Canonical metadata only (docs/FORMAT.md): nothing a tool could act on
	// beyond name and size may vary.
	if hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" ||
		hdr.Linkname != "" || len(hdr.PAXRecords) != 0 || !hdr.ModTime.Equal(r.mtime) {
		return nil, fmt.Errorf("%w: entry %s has non-canonical metadata (mode %o, uid %d, gid %d, mtime %s)", ErrCorrupt, name, hdr.Mode, hdr.Uid, hdr.Gid, hdr.ModTime.UTC().Format(time.RFC3339))
	}
	if size >= 0 && hdr.Size != size {
		return nil, fmt.Errorf("%w: entry %s has %d bytes, manifest says %d", ErrCorrupt, name, hdr.Size, size)
	}
	if size < 0 && (hdr.Size < 0 || hdr.Size > limit) {
		return nil, fmt.Errorf("%w: entry %s claims %d bytes (limit %d)", ErrCorrupt, name, hdr.Size, limit)
	}
	return hdr, nil
}

// finish drains an entry, verifies it and checks what it says about others.
func (r *Reader) finish(e *Entry) error {
	if _, err := io.Copy(io.Discard, e); err != nil {
		return err
	}
	if err := e.verify(); err != nil {
		return err
	}
	switch e.Kind {
	case KindChart:
		r.state = 1
	case KindLayout:
		if !bytes.Equal(e.keep.Bytes(), layoutFile()) {
			return fmt.Errorf("%w: %s: not exactly %s", ErrCorrupt, e.Name, layoutFile())
		}
		r.state = 2
	case KindBlob:
		if e.keep != nil {
			if err := r.checkChildren(*e.Blob, e.keep.Bytes()); err != nil {
				return err
			}
			r.meta[e.Blob.Digest] = e.keep.Bytes()
		}
		r.present[e.Blob.Digest] = *e.Blob
		r.blobIdx++
	case KindIndex:
		want, err := LayoutIndex(r.manifest)
		if err != nil {
			return err
		}
		if !bytes.Equal(e.keep.Bytes(), want) {
			return fmt.Errorf("%w: %s does not match the images in %s", ErrCorrupt, e.Name, ManifestEntry)
		}
		if err := r.checkImageBlobs(); err != nil {
			return err
		}
		r.state = 4
	}
	return nil
}

// checkChildren insists that every descriptor a manifest or index names
// was already in the archive with the same size: blobs precede parents.
func (r *Reader) checkChildren(b Blob, data []byte) error {
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
	for _, c := range children {
		got, ok := r.present[c.Digest]
		if !ok {
			got, ok = r.omitted(c.Digest)
		}
		if !ok {
			return fmt.Errorf("%w: manifest %s references %s, which is not in the bundle before it", ErrCorrupt, b.Digest, c.Digest)
		}
		if got.Size != c.Size {
			return fmt.Errorf("%w: manifest %s says %s has %d bytes, bundle has %d", ErrCorrupt, b.Digest, c.Digest, c.Size, got.Size)
		}
	}
	return nil
}

// omitted returns the manifest's entry for a blob the base carries.
func (r *Reader) omitted(d digest.Digest) (Blob, bool) {
	if r.omittedBlobs == nil {
		r.omittedBlobs = map[digest.Digest]Blob{}
		for _, b := range r.manifest.Blobs {
			if b.Omitted {
				r.omittedBlobs[b.Digest] = b
			}
		}
	}
	b, ok := r.omittedBlobs[d]
	return b, ok
}

// checkImageBlobs insists each image's blob list is exactly the graph its
// manifests describe, so the installer's early use of it was sound. An
// image whose manifests the base carries is checked at the site instead.
func (r *Reader) checkImageBlobs() error {
	for _, img := range r.manifest.Images {
		if r.metaOmitted(img) {
			continue
		}
		graph := map[digest.Digest]bool{}
		var walk func(d digest.Digest) error
		walk = func(d digest.Digest) error {
			if graph[d] {
				return nil
			}
			graph[d] = true
			data, ok := r.meta[d]
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

func (r *Reader) metaOmitted(img Image) bool {
	for _, d := range img.Blobs {
		if b, ok := r.omitted(d); ok && (IsManifest(b.MediaType) || IsIndex(b.MediaType)) {
			return true
		}
	}
	return false
}

// end insists the tar stream stops after index.json, allowing only zero padding.
func (r *Reader) end() error {
	if r.done {
		return nil
	}
	if hdr, err := r.tr.Next(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: unexpected entry %q after %s", ErrCorrupt, hdr.Name, IndexEntry)
		}
		return fmt.Errorf("%w: after %s: %v", ErrCorrupt, IndexEntry, err)
	}
	buf := make([]byte, 32<<10)
	var tail int64
	for {
		n, err := r.dec.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("%w: data after the end of the archive", ErrCorrupt)
			}
		}
		tail += int64(n)
		if tail > 1<<20 {
			return fmt.Errorf("%w: data after the end of the archive", ErrCorrupt)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
	}
	r.done = true
	return nil
}
