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

// PushOptions are what `p7bundle push` (and install's push step) needs.
type PushOptions struct {
	Bundle string
	// KeyPath is the cosign public key; required unless InsecureSkipVerify.
	KeyPath            string
	SigPath            string
	InsecureSkipVerify bool

	// Registry is the site registry HOST[:PORT]; Prefix the repository path under it.
	Registry string
	Prefix   string
	Jobs     int
	// Client reaches the site registry (credentials, TLS, egress guard).
	Client *mirror.Client
	Log    io.Writer
}

// Push verifies the bundle's signature, then streams its blobs into the
// site registry and tags the images only after the bytes pushed are shown
// to be the verified ones.
func Push(ctx context.Context, opts PushOptions) (*mirror.PushResult, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	var trusted []byte
	if opts.InsecureSkipVerify {
		fmt.Fprintf(log, "WARNING: --insecure-skip-verify: the signature of %s is NOT checked; anyone who could change the file chooses what runs at this site\n", opts.Bundle)
	} else {
		if opts.KeyPath == "" {
			return nil, fmt.Errorf("%w: no --key: refusing to push an unverified bundle (--insecure-skip-verify overrides)", bundle.ErrKey)
		}
		v, err := bundle.LoadVerifier(opts.KeyPath)
		if err != nil {
			return nil, err
		}
		trusted, err = bundle.VerifySignature(opts.Bundle, opts.SigPath, v)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "signature of %s verified with %s\n", opts.Bundle, opts.KeyPath)
	}
	src := &fileSource{path: opts.Bundle, trusted: trusted}
	defer src.Close()
	return opts.Client.PushBundle(ctx, src, mirror.PushOptions{Registry: opts.Registry, Prefix: opts.Prefix, Jobs: opts.Jobs, Log: log})
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
	if s.trusted != nil && !bytes.Equal(s.h.Sum(nil), s.trusted) {
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
