package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/mirror"
)

// Push is `p7bundle push`: it verifies a bundle, then streams its blobs
// into the site registry and tags the images only after the bytes pushed
// are shown to be the verified ones. No cluster is needed.
type Push struct {
	Bundle string
	Signature
	Site SiteRegistry
	// Base is last month's bundle, for a differential Bundle whose base is
	// not in the site registry yet: verified with the same key, pushed first.
	Base string
	Jobs int // concurrent uploads; default DefaultJobs
	Log  io.Writer

	// Client overrides the site registry client built from Site.
	Client *mirror.Client
	// verified is the signature check Install already ran.
	verified *bundle.Verified
}

// verifyBundle checks the signature of path and returns what it verified
// (digest, manifest, chart); with skip it warns loudly and returns nil.
func verifyBundle(path, keyPath, sigPath string, skip bool, log io.Writer) (*bundle.Verified, error) {
	if skip {
		fmt.Fprintf(log, "WARNING: --insecure-skip-verify: the signature of %s is NOT checked; anyone who could change the file chooses what runs at this site\n", path)
		return nil, nil
	}
	if keyPath == "" {
		return nil, fmt.Errorf("%w: no --key: refusing to use an unverified bundle (--insecure-skip-verify overrides)", bundle.ErrKey)
	}
	v, err := bundle.LoadVerifier(keyPath)
	if err != nil {
		return nil, err
	}
	verified, err := bundle.VerifySignature(path, sigPath, v)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "signature of %s verified with %s\n", path, keyPath)
	return verified, nil
}

// Run pushes the bundle.
func (p *Push) Run(ctx context.Context) (*mirror.PushResult, error) {
	o := *p
	o.Log = orDiscard(o.Log)
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobs
	}
	site, err := o.Site.resolved()
	if err != nil {
		return nil, err
	}
	o.Site = site
	verified := o.verified
	if verified == nil {
		if verified, err = o.Signature.verify(o.Bundle, o.Log); err != nil {
			return nil, err
		}
	}
	if o.Client == nil {
		if o.Client, err = site.client(site.Guard()); err != nil {
			return nil, err
		}
	}
	if o.Base != "" {
		if err := o.pushBase(ctx, verified); err != nil {
			return nil, err
		}
	}
	src := &fileSource{path: o.Bundle}
	po := mirror.PushOptions{Registry: site.Host, Prefix: site.Prefix, Jobs: o.Jobs, Log: o.Log}
	if verified != nil {
		src.trusted, po.Manifest = verified.Digest, verified.Manifest
	}
	defer src.Close()
	return o.Client.PushBundle(ctx, src, po)
}

// pushBase pushes the base bundle a differential bundle names, after
// checking it is that base: signed with the same key, same manifest digest.
func (opts *Push) pushBase(ctx context.Context, delta *bundle.Verified) error {
	var m *bundle.Manifest
	if delta != nil {
		m = delta.Manifest
	} else if m2, err := bundle.ReadManifest(opts.Bundle); err != nil { // --insecure-skip-verify
		return err
	} else {
		m = m2
	}
	if m.Base == nil {
		return fmt.Errorf("%w: --base %s given, but %s is not a differential bundle", bundle.ErrBase, opts.Base, opts.Bundle)
	}
	base, err := Signature{Key: opts.Key, InsecureSkipVerify: opts.InsecureSkipVerify}.verify(opts.Base, opts.Log)
	if err != nil {
		return err
	}
	if base == nil { // --insecure-skip-verify
		b, err := bundle.ReadManifest(opts.Base)
		if err != nil {
			return err
		}
		base = &bundle.Verified{Manifest: b}
	}
	md, err := base.Manifest.Digest()
	if err != nil {
		return err
	}
	if md != m.Base.ManifestDigest {
		return fmt.Errorf("%w: %s is not the base of %s (which was built on %s, manifest %s)", bundle.ErrBase, opts.Base, opts.Bundle, m.Base.Name, m.Base.ManifestDigest)
	}
	fmt.Fprintf(opts.Log, "pushing the base %s first\n", opts.Base)
	src := &fileSource{path: opts.Base}
	defer src.Close()
	po := mirror.PushOptions{Registry: opts.Site.Host, Prefix: opts.Site.Prefix, Jobs: opts.Jobs, Log: opts.Log, Manifest: base.Manifest}
	src.trusted = base.Digest
	_, err = opts.Client.PushBundle(ctx, src, po)
	return err
}

// fileSource reads the bundle file once per pass and, when sealed, insists
// the bytes read hash to the signed digest: a file swapped after the
// signature check is caught before anything is tagged.
type fileSource struct {
	path    string
	trusted []byte
	f       *os.File
	h       hash.Hash
}

func (s *fileSource) Open() (io.Reader, error) {
	s.Close()
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	s.f, s.h = f, sha256.New()
	return io.TeeReader(f, s.h), nil
}

func (s *fileSource) Sealed() error {
	if _, err := io.Copy(s.h, s.f); err != nil {
		return fmt.Errorf("reading bundle %s: %w", s.path, err)
	}
	if len(s.trusted) > 0 && !bytes.Equal(s.h.Sum(nil), s.trusted) {
		return fmt.Errorf("%w: bundle %s changed after its signature was checked", bundle.ErrSignature, s.path)
	}
	return nil
}

func (s *fileSource) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
