package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/internal/inventory"
	"github.com/p7bundle/p7bundle/internal/version"
)

// Approve is `p7bundle approve`, the security team's counterpart to Build:
// it verifies a bundle (signature, every blob, provenance) and appends a
// signed approval of exactly those bytes to the approvals file.
type Approve struct {
	Bundle string
	// BundleKey verifies the bundle first (file or KMS URI).
	BundleKey string
	// Key signs the approval. KeyPassword unlocks a key file; it is asked
	// for only once the output and the bundle key are known to be good.
	Key         string
	KeyPassword func() ([]byte, error)
	// Sites limits the approval; none means every site.
	Sites []string
	// NotBefore defaults to now; Lasts to 30 days.
	NotBefore time.Time
	Lasts     time.Duration
	Note      string
	// Output is the file appended to; default BUNDLE.approval.jsonl beside
	// the bundle (the joined name for a split set, as the provenance).
	Output string
}

// Approved is what Approve wrote.
type Approved struct {
	Bundle, Digest, Output string
	// Line is the approval's line number in Output.
	Line                int
	Approver            string
	Sites               []string
	NotBefore, NotAfter time.Time
}

// Run verifies, signs and appends.
func (a *Approve) Run(ctx context.Context) (*Approved, error) {
	o := *a
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now()
	}
	if o.Lasts == 0 {
		o.Lasts = 30 * 24 * time.Hour
	}
	if o.Output == "" {
		o.Output = bundle.ApprovalPath(bundle.Name(o.Bundle))
	}
	if err := atomicfile.Check(o.Output, true); err != nil {
		return nil, err
	}
	v, err := bundle.LoadVerifier(ctx, o.BundleKey)
	if err != nil {
		return nil, err
	}
	var pw []byte
	if o.KeyPassword != nil {
		if pw, err = o.KeyPassword(); err != nil {
			return nil, err
		}
	}
	s, err := bundle.LoadSigner(ctx, o.Key, pw)
	if err != nil {
		return nil, err
	}
	// Only what verifies, provenance included, gets approved.
	rep, err := bundle.Verify(ctx, o.Bundle, bundle.VerifyOptions{Verifier: v})
	if err != nil {
		return nil, fmt.Errorf("approve: %w", err)
	}
	if !rep.ProvenanceVerified {
		return nil, fmt.Errorf("approve: %w: %s has no provenance beside it (%s): approve what its builder attested", bundle.ErrProvenance, o.Bundle, bundle.ProvenancePath(bundle.Name(o.Bundle)))
	}
	bom, err := inventory.CycloneDX(rep.Manifest, bundle.Name(o.Bundle))
	if err != nil {
		return nil, err
	}
	bomBytes, err := inventory.Encode(bom)
	if err != nil {
		return nil, err
	}
	opts := bundle.ApproveOptions{Sites: o.Sites, NotBefore: o.NotBefore, NotAfter: o.NotBefore.Add(o.Lasts),
		Note: o.Note, BOMDigest: digest.FromBytes(bomBytes).String(), Tool: bundle.Tool{Name: "p7bundle", Version: version.Version}}
	if bundle.IsKMSKey(o.Key) {
		opts.KMS = o.Key
	}
	line, err := bundle.Approve(ctx, s, rep.Manifest, bundle.Name(o.Bundle), rep.Digest, opts)
	if err != nil {
		return nil, err
	}
	old, err := os.ReadFile(o.Output)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: approvals %s: %v", atomicfile.ErrWrite, o.Output, err)
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	if err := atomicfile.Write(o.Output, append(old, line...), 0o644); err != nil {
		return nil, err
	}
	id, err := bundle.KeyID(s)
	if err != nil {
		return nil, err
	}
	return &Approved{Bundle: o.Bundle, Digest: rep.Digest, Output: o.Output, Line: bytes.Count(old, []byte("\n")) + 1,
		Approver: id, Sites: opts.Sites, NotBefore: opts.NotBefore, NotAfter: opts.NotAfter}, nil
}
