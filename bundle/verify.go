package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Verifier checks the signature; nil skips it (content checks still run).
	Verifier Verifier
	// SigPath defaults to BUNDLE.sig.
	SigPath string
}

// Report is the outcome of Verify, also its --json form.
type Report struct {
	Bundle            string `json:"bundle"`
	Digest            string `json:"digest"`
	Size              int64  `json:"size"`
	SignatureVerified bool   `json:"signatureVerified"`
	ContentVerified   bool   `json:"contentVerified"`
	BlobsChecked      int    `json:"blobsChecked"`
	BytesChecked      int64  `json:"bytesChecked"`
	// ExpectedAtSite lists what a differential bundle leaves to its base.
	ExpectedAtSite *AtSite   `json:"expectedAtSite,omitempty"`
	Manifest       *Manifest `json:"manifest,omitempty"`
	Error          string    `json:"error,omitempty"`
}

// Verify checks the signature over the archive bytes and, in the same pass,
// every entry against the manifest. A signature failure is reported ahead
// of any content error because it is the more fundamental one.
func Verify(ctx context.Context, path string, opts VerifyOptions) (*Report, error) {
	rep := &Report{Bundle: path}
	fail := func(err error) (*Report, error) {
		rep.Error = err.Error()
		return rep, err
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(fmt.Errorf("opening bundle: %w", err))
	}
	defer f.Close()
	var sig string
	if opts.Verifier != nil {
		sigPath := opts.SigPath
		if sigPath == "" {
			sigPath = path + ".sig"
		}
		b, err := os.ReadFile(sigPath)
		if err != nil {
			return fail(fmt.Errorf("%w: reading signature %s: %v", ErrSignature, sigPath, err))
		}
		sig = string(b)
	}
	// The file hash runs on its own core while this one decompresses and
	// hashes blobs.
	h := newParallelHash()
	raw := &countReader{r: io.TeeReader(f, h)}
	contentErr := walk(ctx, raw, rep)
	// Hash the rest even after a content error, so the signature verdict
	// still covers the whole file.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fail(fmt.Errorf("reading bundle %s: %w", path, err))
	}
	sum := h.Sum(nil)
	rep.Digest = digest.NewDigestFromBytes(digest.SHA256, sum).String()
	rep.Size = raw.n
	if opts.Verifier != nil {
		if err := opts.Verifier.VerifyDigest(sum, sig); err != nil {
			return fail(fmt.Errorf("bundle %s: %w", path, err))
		}
		rep.SignatureVerified = true
	}
	if contentErr != nil {
		return fail(fmt.Errorf("bundle %s: %w", path, contentErr))
	}
	rep.ContentVerified = true
	if m := rep.Manifest; m != nil && m.Base != nil {
		rep.ExpectedAtSite = &AtSite{Base: m.Base.Name}
		for _, b := range m.Blobs {
			if b.Omitted {
				rep.ExpectedAtSite.Blobs = append(rep.ExpectedAtSite.Blobs, b.Digest)
				rep.ExpectedAtSite.Bytes += b.Size
			}
		}
	}
	return rep, nil
}

// AtSite is what must already be in the site registry for a differential bundle.
type AtSite struct {
	Base  string          `json:"base"`
	Blobs []digest.Digest `json:"blobs"`
	Bytes int64           `json:"bytes"`
}

func walk(ctx context.Context, r io.Reader, rep *Report) error {
	br, err := NewReader(r)
	if err != nil {
		return err
	}
	defer br.Close()
	rep.Manifest = br.Manifest()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := br.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, e)
		if err != nil {
			return err
		}
		if e.Kind == KindBlob {
			rep.BlobsChecked++
			rep.BytesChecked += n
		}
	}
}

// ReadManifest returns the bundle manifest without verifying anything else.
func ReadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	br, err := NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	defer br.Close()
	return br.Manifest(), nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Verified is what one signature-checking pass over a bundle yields: the
// signed digest, and the manifest and chart decoded from those very bytes.
type Verified struct {
	Digest   []byte
	Manifest *Manifest
	Chart    []byte
}

// VerifySignature hashes the archive file once, decoding its head on the
// way, and checks sigPath (default path.sig) over it. The manifest and
// chart it returns are covered by the signature; later readers compare
// what they read against Digest or Manifest.
func VerifySignature(path, sigPath string, v Verifier) (*Verified, error) {
	if sigPath == "" {
		sigPath = path + ".sig"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading signature %s: %v", ErrSignature, sigPath, err)
	}
	h := newHash()
	m, chart, headErr := readHead(io.TeeReader(f, h))
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("reading bundle %s: %w", path, err)
	}
	sum := h.Sum(nil)
	if err := v.VerifyDigest(sum, string(sig)); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	if headErr != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, headErr)
	}
	return &Verified{Digest: sum, Manifest: m, Chart: chart}, nil
}

// readHead decodes the manifest and the chart (checked against its digest)
// and closes the decoder, which waits for its reads: the caller can then
// go on reading r's source without racing it.
func readHead(r io.Reader) (*Manifest, []byte, error) {
	br, err := NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	defer br.Close()
	e, err := br.Next()
	if err != nil {
		return nil, nil, err
	}
	chart, err := io.ReadAll(io.LimitReader(e, maxChartBytes+1))
	if err != nil {
		return nil, nil, err
	}
	return br.Manifest(), chart, nil
}

// ReadChart returns the manifest and the chart archive of an unverified
// bundle, the chart checked against the manifest's digest. It reads only
// the head of the bundle.
func ReadChart(path string) (*Manifest, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	m, chart, err := readHead(f)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return m, chart, nil
}
