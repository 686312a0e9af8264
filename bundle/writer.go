package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
	// Signer signs the table of contents and the archive; nil signs nothing.
	Signer Signer
	// ModTime stamps every entry; zero means the Unix epoch.
	ModTime time.Time
	// Level is the zstd level of frames that are not already-compressed
	// layers (default zstd.SpeedDefault); those are stored as raw blocks.
	Level zstd.EncoderLevel
	// Concurrency is how many frames are compressed at once (0 = GOMAXPROCS);
	// it does not change the output.
	Concurrency int
	// SplitSize, when > 0, writes the archive as parts of at most this many
	// bytes (at least MinSplitSize), cut at frame boundaries.
	SplitSize int64
	// Progress, if set, receives uncompressed bytes written so far.
	Progress func(written int64)
	// Provenance, with a Signer, writes path.intoto.jsonl: the signed SLSA
	// provenance of the bundle, these being the build's parameters.
	Provenance *ProvenanceParameters
}

// MinSplitSize keeps every part larger than any one frame.
const MinSplitSize = 8 << 20

// WriteResult describes the files Write produced.
type WriteResult struct {
	Path, SigPath, SHA256Path, SigstorePath, ProvenancePath string
	// Parts and PartsPath are set for a split bundle; Path then names the
	// file the parts join into.
	Parts     []string
	PartsPath string
	Digest    string // sha256 of the archive (the joined parts)
	Size      int64  // archive bytes
	// UncompressedSize counts tar bytes; Frames the zstd frames.
	UncompressedSize int64
	Frames           int
}

// Write streams the bundle to path (or its parts) through temporary files
// and renames them into place only when complete, so a failure never
// leaves a file at a final path. Next to it go path.sha256 and, with a
// Signer, path.sig, path.sigstore.json and (opts.Provenance) path.intoto.jsonl.
func Write(ctx context.Context, path string, opts WriteOptions) (*WriteResult, error) {
	m := opts.Manifest
	m.Normalize()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if d := digest.FromBytes(opts.Chart); d != m.Chart.Digest || int64(len(opts.Chart)) != m.Chart.Size {
		return nil, fmt.Errorf("chart %s: content does not match its manifest entry", m.Chart.Path)
	}
	if opts.SplitSize > 0 && opts.SplitSize < MinSplitSize {
		return nil, fmt.Errorf("split size %d: must be at least %d bytes (8 MiB)", opts.SplitSize, MinSplitSize)
	}
	mb, err := m.Encode()
	if err != nil {
		return nil, err
	}
	var tocSig []byte
	if opts.Signer != nil {
		sum := sha256.Sum256(mb)
		s, err := opts.Signer.SignDigest(sum[:])
		if err != nil {
			return nil, err
		}
		tocSig = []byte(s)
	}
	mtime := opts.ModTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	l, err := planLayout(m, int64(len(mb)), int64(len(tocSig)), mtime)
	if err != nil {
		return nil, err
	}
	out, err := newPartWriter(path, opts.SplitSize)
	if err != nil {
		return nil, err
	}
	defer out.abort()
	level := opts.Level
	if level == 0 {
		level = zstd.SpeedDefault
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	enc := newFrameEncoder(out, workers, level)
	chunks := &chunker{cuts: l.cuts(), enc: enc}
	tarBytes := &countWriter{w: chunks, progress: opts.Progress}
	tw := &tarWriter{tw: tar.NewWriter(tarBytes), mtime: mtime}
	werr := writeEntries(ctx, tw, opts, mb, tocSig)
	if werr == nil {
		werr = tw.tw.Close()
	}
	if werr == nil {
		werr = chunks.done()
	}
	// Close the encoders even after an error so their goroutines stop.
	if cerr := enc.close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = out.finish()
	}
	if werr != nil {
		return nil, fmt.Errorf("writing bundle %s: %w", path, werr)
	}
	res := &WriteResult{Path: path, UncompressedSize: tarBytes.n, Frames: len(out.frames)}
	var provenance func(string) ([]byte, error)
	if opts.Provenance != nil && opts.Signer != nil {
		provenance = func(fileDigest string) ([]byte, error) {
			st, err := Provenance(m, path, fileDigest, *opts.Provenance)
			if err != nil {
				return nil, err
			}
			return SignProvenance(ctx, opts.Signer, st)
		}
	}
	if err := out.commit(opts.Signer, provenance, res); err != nil {
		return nil, err
	}
	return res, nil
}

func writeEntries(ctx context.Context, tw *tarWriter, opts WriteOptions, manifest, tocSig []byte) error {
	m := opts.Manifest
	if err := tw.bytes(ManifestEntry, manifest); err != nil {
		return err
	}
	if err := tw.bytes(TOCSignatureEntry, tocSig); err != nil {
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

func (t *tarWriter) bytes(name string, data []byte) error {
	if err := t.tw.WriteHeader(canonicalHeader(name, int64(len(data)), t.mtime)); err != nil {
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
	if err := t.tw.WriteHeader(canonicalHeader(BlobPath(b.Digest), b.Size, t.mtime)); err != nil {
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

// chunker cuts the tar stream into frames at the layout's cuts.
type chunker struct {
	cuts []cut
	enc  *frameEncoder
	pos  int64
	buf  []byte
}

func (c *chunker) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if len(c.cuts) == 0 {
			return written, fmt.Errorf("tar stream runs past its planned layout at %d", c.pos)
		}
		if c.buf == nil {
			c.buf = c.enc.buffer()
		}
		n := int(min(int64(len(p)), c.cuts[0].end-c.pos))
		c.buf = append(c.buf, p[:n]...)
		c.pos += int64(n)
		p = p[n:]
		written += n
		if c.pos == c.cuts[0].end {
			if err := c.enc.encode(c.buf, c.cuts[0].raw); err != nil {
				return written, err
			}
			c.buf, c.cuts = nil, c.cuts[1:]
		}
	}
	return written, nil
}

// done insists the stream ended exactly where the layout says.
func (c *chunker) done() error {
	if len(c.cuts) != 0 || c.buf != nil {
		return fmt.Errorf("tar stream ends at %d, before its planned layout", c.pos)
	}
	return nil
}

// frameEncoder compresses frames on several goroutines, each with its own
// encoders, and hands them to the output in order. At most 2×workers
// frames are in flight, so memory stays flat.
type frameEncoder struct {
	out     *partWriter
	level   zstd.EncoderLevel
	work    chan *frameJob
	order   chan *frameJob
	wg      sync.WaitGroup
	written chan error
	mu      sync.Mutex
	err     error
	pool    sync.Pool // frame input, cap FrameSize
	outs    sync.Pool // compressed frames: fresh 4 MiB buffers cost page faults and GC
}

type frameJob struct {
	in, out []byte
	raw     bool
	err     error
	done    chan struct{}
}

func newFrameEncoder(out *partWriter, workers int, level zstd.EncoderLevel) *frameEncoder {
	e := &frameEncoder{out: out, level: level, work: make(chan *frameJob, workers), order: make(chan *frameJob, 2*workers), written: make(chan error, 1)}
	e.pool.New = func() any { return make([]byte, 0, FrameSize) }
	e.outs.New = func() any { return make([]byte, 0, FrameSize+FrameSize/64+1024) }
	for range workers {
		e.wg.Add(1)
		go e.compress()
	}
	go e.write()
	return e
}

func (e *frameEncoder) buffer() []byte { return e.pool.Get().([]byte)[:0] }

func (e *frameEncoder) compress() {
	defer e.wg.Done()
	var enc *zstd.Encoder
	for j := range e.work {
		out := e.outs.Get().([]byte)[:0]
		if j.raw {
			j.out = appendRawFrame(out, j.in)
			close(j.done)
			continue
		}
		if enc == nil {
			enc, j.err = zstd.NewWriter(nil, zstd.WithEncoderLevel(e.level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(FrameSize))
			if j.err != nil {
				close(j.done)
				continue
			}
		}
		j.out = enc.EncodeAll(j.in, out)
		if len(j.out) > rawFrameSize(len(j.in)) {
			j.out = appendRawFrame(j.out[:0], j.in)
		}
		close(j.done)
	}
}

// write appends finished frames to the output in stream order.
func (e *frameEncoder) write() {
	var err error
	for j := range e.order {
		<-j.done
		if err == nil {
			err = j.err
		}
		if err == nil {
			err = e.out.frame(j.out, int64(len(j.in)))
		}
		if err != nil {
			e.mu.Lock()
			e.err = err
			e.mu.Unlock()
		}
		e.pool.Put(j.in[:0])
		if j.out != nil {
			e.outs.Put(j.out[:0])
		}
	}
	e.written <- err
}

func (e *frameEncoder) encode(in []byte, raw bool) error {
	e.mu.Lock()
	err := e.err
	e.mu.Unlock()
	if err != nil {
		return err
	}
	j := &frameJob{in: in, raw: raw, done: make(chan struct{})}
	e.order <- j
	e.work <- j
	return nil
}

func (e *frameEncoder) close() error {
	close(e.work)
	e.wg.Wait()
	close(e.order)
	return <-e.written
}
