package bundle

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p7bundle/p7bundle/internal/atomicfile"
)

// BlobOpener opens a blob by digest; the writer checks what it reads.
type BlobOpener func(ctx context.Context, d digest.Digest) (io.ReadCloser, error)

// WriteOptions says what goes into a bundle and how.
type WriteOptions struct {
	Manifest *Manifest // normalized by Write
	Chart    []byte    // the chart .tgz, Manifest.Chart describes it
	Blobs    BlobOpener
	// Fresh, when set, names blobs the caller verified against their digest
	// in this run (fetched into its cache); the writer checks only their
	// size instead of hashing them a second time.
	Fresh func(digest.Digest) bool
	// Signer signs the archive digest; nil writes no .sig.
	Signer Signer
	// ModTime stamps every entry; zero means the Unix epoch.
	ModTime time.Time
	// Level is the zstd level (default zstd.SpeedDefault).
	Level zstd.EncoderLevel
	// Concurrency of the zstd encoder (0 = GOMAXPROCS); it does not change the output.
	Concurrency int
	// Progress, if set, receives uncompressed bytes written so far.
	Progress func(written int64)
}

// WriteResult describes the files Write produced.
type WriteResult struct {
	Path, SigPath, SHA256Path, SigstorePath string
	Digest                                  string // sha256 of the archive file
	Size                                    int64  // archive bytes
	UncompressedSize                        int64  // tar bytes
}

// Write streams the bundle to path through a temporary file and renames it
// into place only when complete, so a failure never leaves a file at path.
// Next to it go path.sha256 and, with a Signer, path.sig.
func Write(ctx context.Context, path string, opts WriteOptions) (*WriteResult, error) {
	m := opts.Manifest
	m.Normalize()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if d := digest.FromBytes(opts.Chart); d != m.Chart.Digest || int64(len(opts.Chart)) != m.Chart.Size {
		return nil, fmt.Errorf("chart %s: content does not match its manifest entry", m.Chart.Path)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating output in %s: %w", dir, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	fileHash := sha256.New()
	counted := &countWriter{w: io.MultiWriter(tmp, fileHash)}
	// The buffer turns the encoder's many small frame writes into large file writes.
	buffered := bufio.NewWriterSize(counted, 1<<20)
	level := opts.Level
	if level == 0 {
		level = zstd.SpeedDefault
	}
	// A 2 MiB window keeps the parallel encoder's jobs (4 windows each, in
	// and out, per core) near 100 MiB; the default 8 MiB took ~800 MiB RSS
	// for about 1 % better compression. Part of the format's reproducibility:
	// changing it changes the bytes.
	enc, err := zstd.NewWriter(buffered,
		zstd.WithEncoderLevel(level),
		zstd.WithWindowSize(2<<20),
		zstd.WithEncoderConcurrency(opts.Concurrency),
		zstd.WithConcurrentBlocks(true))
	if err != nil {
		return nil, err
	}
	tarBytes := &countWriter{w: enc, progress: opts.Progress}
	tw := &tarWriter{tw: tar.NewWriter(tarBytes), mtime: opts.ModTime}
	if tw.mtime.IsZero() {
		tw.mtime = time.Unix(0, 0)
	}
	werr := writeEntries(ctx, tw, opts)
	if werr == nil {
		werr = tw.tw.Close()
	}
	// Close the encoder even after an error so its goroutines stop.
	if cerr := enc.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = buffered.Flush()
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("writing bundle %s: %w", path, werr)
	}
	sum := fileHash.Sum(nil)
	res := &WriteResult{
		Path:             path,
		Digest:           digest.NewDigestFromBytes(digest.SHA256, sum).String(),
		Size:             counted.n,
		UncompressedSize: tarBytes.n,
		SHA256Path:       path + ".sha256",
	}
	// Companions first, archive last: a crash in between leaves no archive
	// that looks complete, at worst a .sig that matches nothing.
	if err := atomicfile.Write(res.SHA256Path, []byte(hex.EncodeToString(sum)+"  "+filepath.Base(path)+"\n"), 0o644); err != nil {
		return nil, err
	}
	if opts.Signer != nil {
		sig, err := opts.Signer.SignDigest(sum)
		if err != nil {
			return nil, err
		}
		res.SigPath = path + ".sig"
		if err := atomicfile.Write(res.SigPath, []byte(sig), 0o644); err != nil {
			return nil, err
		}
		sb, err := SigstoreBundle(opts.Signer, sum, sig)
		if err != nil {
			return nil, err
		}
		res.SigstorePath = path + ".sigstore.json"
		if err := atomicfile.Write(res.SigstorePath, sb, 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("renaming bundle into place: %w", err)
	}
	committed = true
	return res, nil
}

func writeEntries(ctx context.Context, tw *tarWriter, opts WriteOptions) error {
	m := opts.Manifest
	mb, err := m.Encode()
	if err != nil {
		return err
	}
	if err := tw.bytes(ManifestEntry, mb); err != nil {
		return err
	}
	if err := tw.bytes(m.Chart.Path, opts.Chart); err != nil {
		return err
	}
	if err := tw.bytes(OCILayoutEntry, layoutFile()); err != nil {
		return err
	}
	for _, b := range m.Blobs {
		if b.Omitted {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tw.blob(ctx, b, opts.Blobs, opts.Fresh != nil && opts.Fresh(b.Digest)); err != nil {
			return err
		}
	}
	idx, err := LayoutIndex(m)
	if err != nil {
		return err
	}
	return tw.bytes(IndexEntry, idx)
}

// layoutFile is the oci-layout entry, byte for byte.
func layoutFile() []byte {
	b, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	return b
}

// LayoutIndex is the index.json of the bundle's OCI layout: one entry per
// image, annotated with its original reference.
func LayoutIndex(m *Manifest) ([]byte, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	sizes := make(map[digest.Digest]int64, len(m.Blobs))
	for _, b := range m.Blobs {
		sizes[b.Digest] = b.Size
	}
	for _, img := range m.Images {
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType:   img.MediaType,
			Digest:      img.Digest,
			Size:        sizes[img.Digest],
			Annotations: map[string]string{RefNameAnnotation: img.Ref},
		})
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

type tarWriter struct {
	tw    *tar.Writer
	mtime time.Time
}

func (t *tarWriter) header(name string, size int64) error {
	return t.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  t.mtime,
		Format:   tar.FormatPAX,
	})
}

func (t *tarWriter) bytes(name string, data []byte) error {
	if err := t.header(name, int64(len(data))); err != nil {
		return err
	}
	_, err := t.tw.Write(data)
	return err
}

// blob copies one blob, hashing as it goes (unless fresh), so a corrupt
// cache never ends up in a signed bundle.
func (t *tarWriter) blob(ctx context.Context, b Blob, open BlobOpener, fresh bool) error {
	rc, err := open(ctx, b.Digest)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	defer rc.Close()
	if err := t.header(BlobPath(b.Digest), b.Size); err != nil {
		return err
	}
	h := sha256.New()
	var w io.Writer = io.MultiWriter(t.tw, h)
	if fresh {
		w = t.tw
	}
	n, err := io.Copy(w, io.LimitReader(rc, b.Size))
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	if n != b.Size {
		return fmt.Errorf("blob %s: read %d bytes, expected %d", b.Digest, n, b.Size)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); !fresh && got != b.Digest {
		return fmt.Errorf("blob %s: source content has digest %s", b.Digest, got)
	}
	return nil
}

type countWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil {
		c.progress(c.n)
	}
	return n, err
}

// newHash exists so readers and writers agree on the archive hash.
func newHash() hash.Hash { return sha256.New() }

// parallelHash is a SHA-256 that hashes in its own goroutine: Write copies
// the bytes into a pooled buffer and returns; Sum waits for the backlog.
type parallelHash struct {
	h    hash.Hash
	ch   chan []byte
	free chan []byte
	done chan struct{}
}

func newParallelHash() *parallelHash {
	p := &parallelHash{h: sha256.New(), ch: make(chan []byte, 8), free: make(chan []byte, 9), done: make(chan struct{})}
	go func() {
		for b := range p.ch {
			p.h.Write(b)
			select {
			case p.free <- b[:0]:
			default: // pool full: let the GC have it
			}
		}
		close(p.done)
	}()
	return p
}

func (p *parallelHash) Write(b []byte) (int, error) {
	for rest := b; len(rest) > 0; {
		var buf []byte
		select {
		case buf = <-p.free:
		default:
			buf = make([]byte, 0, 1<<20)
		}
		n := min(len(rest), cap(buf))
		p.ch <- append(buf, rest[:n]...)
		rest = rest[n:]
	}
	return len(b), nil
}

// Sum finishes the hash; the hasher must not be written to afterwards.
func (p *parallelHash) Sum(b []byte) []byte {
	close(p.ch)
	<-p.done
	return p.h.Sum(b)
}
