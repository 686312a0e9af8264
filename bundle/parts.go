package bundle

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/internal/writeback"
)

// PartsMediaType identifies B.parts.json, the list of a split bundle's parts.
const PartsMediaType = "application/vnd.p7bundle.parts.v1+json"

// Parts is B.parts.json: the parts that, concatenated in order, are the
// bundle B byte for byte.
type Parts struct {
	MediaType string        `json:"mediaType"`
	Bundle    string        `json:"bundle"` // file name of the joined bundle
	Size      int64         `json:"size"`
	Digest    digest.Digest `json:"digest"`
	Parts     []PartFile    `json:"parts"`
}

// PartFile is one part: B.tar.zst.001, .002, ...
type PartFile struct {
	Name   string        `json:"name"`
	Size   int64         `json:"size"`
	Digest digest.Digest `json:"digest"`
}

// PartsPath is where the parts list of the bundle at path lives.
func PartsPath(path string) string { return path + ".parts.json" }

func partName(path string, i int) string { return fmt.Sprintf("%s.%03d", path, i) }

var partSuffix = regexp.MustCompile(`\.[0-9]{3}$`)

// PartBase is B for a part named B.NNN, else "".
func PartBase(path string) string {
	if partSuffix.MatchString(path) {
		return path[:len(path)-4]
	}
	return ""
}

// bundleFiles is a bundle on disk: one file, or the parts of a split one.
type bundleFiles struct {
	path  string // the bundle's name: the single file, or what the parts join into
	files []string
	sizes []int64
	parts *Parts
	raw   []byte   // parts.json as read, for its signature
	notes []string // what is worth saying but not wrong (renamed files)
}

// resolveFiles finds the bundle named by arg: the file itself, or, for a
// split bundle, any of its parts, its parts.json, or the joined name.
// Name is the bundle a file argument stands for: the file itself, or, for
// a part or the parts.json of a split bundle, the file its parts join into.
func Name(arg string) string {
	switch {
	case strings.HasSuffix(arg, ".parts.json"):
		return strings.TrimSuffix(arg, ".parts.json")
	case PartBase(arg) != "":
		if _, err := os.Stat(PartsPath(PartBase(arg))); err == nil {
			return PartBase(arg)
		}
	}
	return arg
}

func resolveFiles(arg string) (*bundleFiles, error) {
	base := Name(arg)
	pp := PartsPath(base)
	raw, err := os.ReadFile(pp)
	if errors.Is(err, os.ErrNotExist) {
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, fmt.Errorf("opening bundle: %w", err)
		}
		if !fi.Mode().IsRegular() {
			// Reads jump to the seek table at the end: a stream cannot do that.
			return nil, fmt.Errorf("opening bundle %s: %w (%s): save it to a file first", arg, ErrNotFile, fi.Mode().Type())
		}
		return &bundleFiles{path: arg, files: []string{arg}, sizes: []int64{fi.Size()}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	if len(raw) > maxMetadataBytes {
		return nil, fmt.Errorf("%w: %s: %d bytes", ErrCorrupt, pp, len(raw))
	}
	var p Parts
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, pp, err)
	}
	if p.MediaType != PartsMediaType || len(p.Parts) == 0 {
		return nil, fmt.Errorf("%w: %s is not a parts list of %s", ErrCorrupt, pp, PartsMediaType)
	}
	// Transfer systems rename files; the signatures bind digests, not names.
	bf := &bundleFiles{path: base, parts: &p, raw: raw}
	if p.Bundle != filepath.Base(base) {
		bf.notes = append(bf.notes, fmt.Sprintf("%s was built as %s (renamed: the signatures bind its digest, not its name)", filepath.Base(base), p.Bundle))
	}
	var total int64
	for i, part := range p.Parts {
		if part.Size <= 0 {
			return nil, fmt.Errorf("%w: %s: part %d has %d bytes", ErrCorrupt, pp, i+1, part.Size)
		}
		// The parts follow the parts list's name, or kept those they were built with.
		name := partName(base, i+1)
		fi, err := os.Stat(name)
		if listed := filepath.Join(filepath.Dir(base), filepath.Base(part.Name)); err != nil && part.Name != "" && listed != name {
			if lfi, lerr := os.Stat(listed); lerr == nil {
				name, fi, err = listed, lfi, nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("split bundle %s: part %d of %d missing: %w", base, i+1, len(p.Parts), err)
		}
		if fi.Size() != part.Size {
			return nil, fmt.Errorf("%w: part %s has %d bytes, %s says %d (a part of another build?)", ErrCorrupt, name, fi.Size(), filepath.Base(pp), part.Size)
		}
		bf.files = append(bf.files, name)
		bf.sizes = append(bf.sizes, part.Size)
		total += part.Size
	}
	if total != p.Size {
		return nil, fmt.Errorf("%w: %s: parts add up to %d bytes, it says %d", ErrCorrupt, pp, total, p.Size)
	}
	return bf, nil
}

// multiFile reads several files as one.
type multiFile struct {
	files []readerAtCloser
	offs  []int64 // start of each file
	size  int64
}

func (bf *bundleFiles) open() (*multiFile, error) {
	mf := &multiFile{}
	for i, name := range bf.files {
		f, err := os.Open(name)
		if err != nil {
			mf.Close()
			return nil, fmt.Errorf("opening bundle: %w", err)
		}
		mf.files = append(mf.files, readerAtCloser(f))
		mf.offs = append(mf.offs, mf.size)
		mf.size += bf.sizes[i]
	}
	return mf, nil
}

type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

func (mf *multiFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= mf.size {
		return 0, io.EOF
	}
	read := 0
	for len(p) > 0 && off < mf.size {
		i := sort.Search(len(mf.offs), func(i int) bool { return mf.offs[i] > off }) - 1
		end := mf.size
		if i+1 < len(mf.offs) {
			end = mf.offs[i+1]
		}
		n := int(min(int64(len(p)), end-off))
		m, err := mf.files[i].ReadAt(p[:n], off-mf.offs[i])
		read += m
		off += int64(m)
		p = p[m:]
		if err != nil && !(errors.Is(err, io.EOF) && m == n) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the file shrank under us
			}
			return read, err
		}
	}
	if len(p) > 0 {
		return read, io.EOF
	}
	return read, nil
}

func (mf *multiFile) Close() error {
	var first error
	for _, f := range mf.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// partWriter writes frames into one temporary file, or into parts of at
// most split bytes cut between frames, hashing the whole and each part.
type partWriter struct {
	path   string
	split  int64
	temps  []*os.File
	buf    *bufio.Writer
	size   int64 // bytes in the current part
	whole  hash.Hash
	part   hash.Hash
	parts  []PartFile
	frames []frame
	cOff   int64
	dOff   int64
}

func newPartWriter(path string, split int64) (*partWriter, error) {
	w := &partWriter{path: path, split: split, whole: sha256.New()}
	return w, w.next()
}

func (w *partWriter) next() error {
	if err := w.closePart(); err != nil {
		return err
	}
	name := w.path
	if w.split > 0 {
		name = partName(w.path, len(w.temps)+1)
	}
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating output in %s: %w", dir, err)
	}
	w.temps = append(w.temps, f)
	w.buf = bufio.NewWriterSize(io.MultiWriter(writeback.New(f), w.whole), 1<<20)
	w.part = nil
	if w.split > 0 {
		w.part = sha256.New()
	}
	w.size = 0
	return nil
}

// write adds one unit (a frame or the seek table) to the current part,
// starting a new part first when it would not fit.
func (w *partWriter) write(b []byte) error {
	if w.split > 0 && w.size > 0 && w.size+int64(len(b)) > w.split {
		if err := w.next(); err != nil {
			return err
		}
	}
	if _, err := w.buf.Write(b); err != nil {
		return err
	}
	if w.part != nil {
		w.part.Write(b)
	}
	w.size += int64(len(b))
	return nil
}

func (w *partWriter) frame(b []byte, dSize int64) error {
	w.frames = append(w.frames, frame{cOff: w.cOff, cSize: int64(len(b)), dOff: w.dOff, dSize: dSize})
	w.cOff += int64(len(b))
	w.dOff += dSize
	return w.write(b)
}

// closePart flushes, syncs and closes the current part and records it.
func (w *partWriter) closePart() error {
	if len(w.temps) == 0 {
		return nil
	}
	f := w.temps[len(w.temps)-1]
	if err := w.buf.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	name := w.path
	if w.split > 0 {
		name = partName(w.path, len(w.temps))
	}
	part := PartFile{Name: filepath.Base(name), Size: w.size}
	if w.part != nil {
		part.Digest = digest.NewDigestFromBytes(digest.SHA256, w.part.Sum(nil))
	}
	w.parts = append(w.parts, part)
	return nil
}

// finish appends the seek table and closes the last part.
func (w *partWriter) finish() error {
	if err := w.write(appendSeekTable(nil, w.frames)); err != nil {
		return err
	}
	w.cOff = 0
	for _, p := range w.parts {
		w.cOff += p.Size
	}
	return w.closePart()
}

// commit signs, renames the archive (or its parts) into place, then writes
// the companions, parts.json last: a signature never sits beside a file it
// does not sign. If a companion cannot be written, the files this commit
// put in place are removed again.
func (w *partWriter) commit(s Signer, provenance func(fileDigest string) ([]byte, error), res *WriteResult) error {
	sum := w.whole.Sum(nil)
	for _, p := range w.parts {
		res.Size += p.Size
	}
	res.Digest = digest.NewDigestFromBytes(digest.SHA256, sum).String()
	res.SHA256Path = w.path + ".sha256"
	type companion struct {
		path string
		data []byte
	}
	companions := []companion{{res.SHA256Path, []byte(hex.EncodeToString(sum) + "  " + filepath.Base(w.path) + "\n")}}
	var partsJSON []byte
	if w.split > 0 {
		var err error
		partsJSON, err = json.MarshalIndent(Parts{MediaType: PartsMediaType, Bundle: filepath.Base(w.path), Size: res.Size,
			Digest: digest.Digest(res.Digest), Parts: w.parts}, "", "  ")
		if err != nil {
			return err
		}
		partsJSON = append(partsJSON, '\n')
	}
	if s != nil {
		sig, err := s.SignDigest(sum)
		if err != nil {
			return err
		}
		sb, err := SigstoreBundle(s, sum, sig)
		if err != nil {
			return err
		}
		res.SigPath, res.SigstorePath = w.path+".sig", w.path+".sigstore.json"
		companions = append(companions, companion{res.SigPath, []byte(sig)}, companion{res.SigstorePath, sb})
		if partsJSON != nil {
			psum := sha256.Sum256(partsJSON)
			psig, err := s.SignDigest(psum[:])
			if err != nil {
				return err
			}
			companions = append(companions, companion{PartsPath(w.path) + ".sig", []byte(psig)})
		}
		if provenance != nil {
			line, err := provenance(res.Digest)
			if err != nil {
				return err
			}
			res.ProvenancePath = ProvenancePath(w.path)
			companions = append(companions, companion{res.ProvenancePath, line})
		}
	}
	if partsJSON != nil {
		res.PartsPath = PartsPath(w.path)
		companions = append(companions, companion{res.PartsPath, partsJSON})
	}
	var placed []string
	undo := func(err error) error {
		for _, p := range placed {
			os.Remove(p)
		}
		return err
	}
	for i, f := range w.temps {
		name := w.path
		if w.split > 0 {
			name = partName(w.path, i+1)
		}
		if err := os.Chmod(f.Name(), 0o644); err != nil {
			return undo(err)
		}
		if err := os.Rename(f.Name(), name); err != nil {
			return undo(fmt.Errorf("renaming bundle into place: %w", err))
		}
		placed = append(placed, name)
	}
	w.temps = nil
	if w.split > 0 {
		res.Parts = placed
	}
	for _, c := range companions {
		if err := atomicfile.Write(c.path, c.data, 0o644); err != nil {
			return undo(err)
		}
		placed = append(placed, c.path)
	}
	return nil
}

// abort removes temporary files left by a failed write.
func (w *partWriter) abort() {
	for _, f := range w.temps {
		f.Close()
		os.Remove(f.Name())
	}
}

// Join writes the bundle a split bundle's parts make, through a temporary
// file, checking every part against parts.json and the whole against its
// digest; out defaults to the name the parts join into. An existing out is
// replaced only with force; otherwise the error wraps os.ErrExist.
func Join(arg, out string, force bool) (string, error) {
	bf, err := resolveFiles(arg)
	if err != nil {
		return "", err
	}
	if bf.parts == nil {
		return "", fmt.Errorf("%w: %s is not a split bundle (no %s)", ErrNotBundle, arg, filepath.Base(PartsPath(arg)))
	}
	if out == "" {
		out = bf.path
	}
	if err := atomicfile.Check(out, force); err != nil {
		return "", err
	}
	write := atomicfile.CreateFunc
	if force {
		write = atomicfile.WriteFunc
	}
	whole := sha256.New()
	err = write(out, 0o644, func(w io.Writer) error {
		for i, name := range bf.files {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("opening bundle: %w", err)
			}
			h := sha256.New()
			_, err = io.Copy(io.MultiWriter(w, h, whole), f)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading part %s: %w", name, err)
			}
			if d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); d != bf.parts.Parts[i].Digest {
				return fmt.Errorf("%w: part %s has digest %s, %s says %s", ErrCorrupt, name, d, filepath.Base(PartsPath(bf.path)), bf.parts.Parts[i].Digest)
			}
		}
		if d := digest.NewDigestFromBytes(digest.SHA256, whole.Sum(nil)); d != bf.parts.Digest {
			return fmt.Errorf("%w: joined parts have digest %s, %s says %s", ErrCorrupt, d, filepath.Base(PartsPath(bf.path)), bf.parts.Digest)
		}
		return nil
	})
	return out, err
}
