package bundle

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Verifier checks the signatures; nil skips them (content checks still run).
	Verifier Verifier
	// SigPath defaults to BUNDLE.sig.
	SigPath string
	// ProvenancePath defaults to BUNDLE.intoto.jsonl, checked when present;
	// when set, it must exist.
	ProvenancePath string
	// Jobs is how many blobs are checked at once (default GOMAXPROCS).
	Jobs int
}

// Report is the outcome of Verify, also its --json form.
type Report struct {
	Bundle            string `json:"bundle"`
	Digest            string `json:"digest"`
	Size              int64  `json:"size"`
	Parts             int    `json:"parts,omitempty"`
	SignatureVerified bool   `json:"signatureVerified"`
	TOCVerified       bool   `json:"tocVerified"`
	ContentVerified   bool   `json:"contentVerified"`
	BlobsChecked      int64  `json:"blobsChecked"`
	// Provenance is the provenance file checked, if any.
	Provenance         string `json:"provenance,omitempty"`
	ProvenanceVerified bool   `json:"provenanceVerified"`
	// BuildParameters are the provenance's, which the manifest does not hold.
	BuildParameters *ProvenanceParameters `json:"buildParameters,omitempty"`
	BytesChecked    int64                 `json:"bytesChecked"`
	// ExpectedAtSite lists what a differential bundle leaves to its base.
	ExpectedAtSite *AtSite   `json:"expectedAtSite,omitempty"`
	Manifest       *Manifest `json:"manifest,omitempty"`
	// Approvals are the lines of the approvals file, as checked (verify
	// --approvals).
	Approvals []ApprovalStatus `json:"approvals,omitempty"`
	// Notes are worth saying but not wrong: a renamed bundle or part.
	Notes []string `json:"notes,omitempty"`
	Error string   `json:"error,omitempty"`
}

// Verify is the full offline check: the signature over the archive bytes
// (hashed front to back on one core) and the table of contents signature,
// and, on the other cores at the same time, every blob against the
// manifest, every manifest's references and every other entry. A
// signature failure is reported ahead of any content error because it is
// the more fundamental one.
func Verify(ctx context.Context, path string, opts VerifyOptions) (*Report, error) {
	rep := &Report{Bundle: path}
	fail := func(err error) (*Report, error) {
		rep.Error = err.Error()
		return rep, err
	}
	bf, err := resolveFiles(path)
	if err != nil {
		return fail(err)
	}
	if bf.parts != nil {
		rep.Parts = len(bf.files)
	}
	rep.Notes = append(rep.Notes, bf.notes...)
	var sig, partsSig []byte
	if opts.Verifier != nil {
		sigPath := opts.SigPath
		if sigPath == "" {
			sigPath = bf.path + ".sig"
		}
		if sig, err = os.ReadFile(sigPath); err != nil {
			return fail(fmt.Errorf("%w: reading signature %s: %v", ErrSignature, sigPath, err))
		}
		if bf.parts != nil {
			p := PartsPath(bf.path) + ".sig"
			if partsSig, err = os.ReadFile(p); err != nil {
				return fail(fmt.Errorf("%w: reading signature %s: %v", ErrSignature, p, err))
			}
		}
	}
	type hashed struct {
		sum  []byte
		size int64
		err  error
	}
	hashCh := make(chan hashed, 1)
	go func() {
		mf, err := bf.open()
		if err != nil {
			hashCh <- hashed{err: err}
			return
		}
		defer mf.Close()
		h := sha256.New()
		// 1 MiB reads: io.Copy's 32 KiB cost a tenth of verify's time in syscalls.
		n, err := io.CopyBuffer(h, io.NewSectionReader(mf, 0, mf.size), make([]byte, 1<<20))
		hashCh <- hashed{h.Sum(nil), n, err}
	}()
	contentErr := checkContent(ctx, bf, rep, opts)
	hr := <-hashCh
	if hr.err != nil {
		return fail(fmt.Errorf("reading bundle %s: %w", path, hr.err))
	}
	rep.Digest = digest.NewDigestFromBytes(digest.SHA256, hr.sum).String()
	rep.Size = hr.size
	if opts.Verifier != nil {
		if err := opts.Verifier.VerifyDigest(hr.sum, string(sig)); err != nil {
			if errors.Is(contentErr, ErrTruncated) { // the likely cause, said beside it
				return fail(fmt.Errorf("bundle %s: %w; and %v", path, err, contentErr))
			}
			return fail(fmt.Errorf("bundle %s: %w", path, err))
		}
		if partsSig != nil {
			sum := sha256.Sum256(bf.raw)
			if err := opts.Verifier.VerifyDigest(sum[:], string(partsSig)); err != nil {
				return fail(fmt.Errorf("bundle %s: %s: %w", path, filepath.Base(PartsPath(bf.path)), err))
			}
		}
		rep.SignatureVerified = true
	}
	if bf.parts != nil && bf.parts.Digest.String() != rep.Digest {
		return fail(fmt.Errorf("%w: bundle %s: the parts hash to %s, %s says %s", ErrCorrupt, path, rep.Digest, filepath.Base(PartsPath(bf.path)), bf.parts.Digest))
	}
	if contentErr != nil {
		return fail(fmt.Errorf("bundle %s: %w", path, contentErr))
	}
	rep.ContentVerified = true
	if opts.Verifier != nil {
		if err := checkProvenance(ctx, bf.path, rep, opts); err != nil {
			return fail(err)
		}
	}
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

// checkProvenance verifies the provenance beside the bundle against the
// verified manifest and archive digest; a missing default file is no error
// (bundles of older versions and copies made without it).
func checkProvenance(ctx context.Context, bundlePath string, rep *Report, opts VerifyOptions) error {
	p := opts.ProvenancePath
	if p == "" {
		p = ProvenancePath(bundlePath)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	params, signedAs, err := VerifyProvenance(ctx, p, opts.Verifier, rep.Manifest, bundlePath, rep.Digest)
	if err != nil {
		return err
	}
	if signedAs != "" {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s names the bundle %s (renamed: it binds the digest %s, which matches)", filepath.Base(p), signedAs, rep.Digest))
	}
	rep.Provenance, rep.ProvenanceVerified, rep.BuildParameters = p, true, params
	return nil
}

// AtSite is what must already be in the site registry for a differential bundle.
type AtSite struct {
	Base  string          `json:"base"`
	Blobs []digest.Digest `json:"blobs"`
	Bytes int64           `json:"bytes"`
}

// checkContent reads every entry of the bundle, blobs several at a time.
func checkContent(ctx context.Context, bf *bundleFiles, rep *Report, opts VerifyOptions) error {
	a, err := open(bf)
	if err != nil {
		return err
	}
	defer a.Close()
	rep.Manifest = a.Manifest()
	if opts.Verifier != nil {
		if err := a.VerifyTOC(opts.Verifier); err != nil {
			return err
		}
		rep.TOCVerified = true
	}
	if _, err := a.Metadata(); err != nil {
		return err
	}
	if err := a.CheckStructure(); err != nil {
		return err
	}
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	var blobs, bytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, b := range a.Manifest().Blobs {
		if b.Omitted {
			continue
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			r, err := a.Blob(b.Digest)
			if err != nil {
				return err
			}
			defer r.Close()
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return err
			}
			blobs.Add(1)
			bytes.Add(n)
			return gctx.Err()
		})
	}
	err = g.Wait()
	rep.BlobsChecked, rep.BytesChecked = blobs.Load(), bytes.Load()
	if err != nil {
		return err
	}
	return ctx.Err()
}

// OpenVerified opens the bundle and checks its table of contents
// signature: from then on every entry read from it is checked against the
// signed manifest as it streams.
func OpenVerified(path string, v Verifier) (*Archive, error) {
	a, err := Open(path)
	if err != nil {
		return nil, err
	}
	if err := a.VerifyTOC(v); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// ReadManifest returns the bundle manifest without verifying anything else.
func ReadManifest(path string) (*Manifest, error) {
	a, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return a.Manifest(), nil
}

// ReadChart returns the manifest and the chart archive of an unverified
// bundle, the chart checked against the manifest's digest.
func ReadChart(path string) (*Manifest, []byte, error) {
	a, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer a.Close()
	chart, err := a.Chart()
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return a.Manifest(), chart, nil
}
