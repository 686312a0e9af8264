package installer

import (
	"context"
	"fmt"
	"io"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/mirror"
)

// Push is `p7bundle push`: it checks a bundle's signed table of contents,
// then uploads the blobs the site registry lacks, each verified against it
// while it streams, and tags the images only after every blob read is
// verified. No cluster is needed.
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
	// archive is the bundle Install already opened and verified.
	archive *bundle.Archive
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
	// The client first: it reads --ca-file, a local input, without dialing.
	if o.Client == nil {
		if o.Client, err = site.client(site.Guard(o.Log)); err != nil {
			return nil, err
		}
	}
	a := o.archive
	if a == nil {
		if a, err = o.Signature.open(ctx, o.Bundle, o.Log); err != nil {
			return nil, err
		}
		defer a.Close()
	}
	if o.Base != "" {
		if err := o.pushBase(ctx, a.Manifest()); err != nil {
			return nil, err
		}
	}
	return o.Client.PushBundle(ctx, a, mirror.PushOptions{Registry: site.Host, Prefix: site.Prefix, Jobs: o.Jobs, Log: o.Log})
}

// pushBase pushes the base bundle a differential bundle names, after
// checking it is that base: signed with the same key, same manifest digest.
func (opts *Push) pushBase(ctx context.Context, m *bundle.Manifest) error {
	if m.Base == nil {
		return fmt.Errorf("%w: --base %s given, but %s is not a differential bundle", bundle.ErrBase, opts.Base, opts.Bundle)
	}
	// The base is checked by its signature alone: it is pushed only to carry
	// what the approved differential bundle names, and last month's
	// approval may have lapsed since.
	sig := opts.Signature
	sig.RequireApprovals = nil
	base, err := sig.open(ctx, opts.Base, opts.Log)
	if err != nil {
		return err
	}
	defer base.Close()
	md, err := base.Manifest().Digest()
	if err != nil {
		return err
	}
	if md != m.Base.ManifestDigest {
		return fmt.Errorf("%w: %s is not the base of %s (which was built on %s, manifest %s)", bundle.ErrBase, opts.Base, opts.Bundle, m.Base.Name, m.Base.ManifestDigest)
	}
	fmt.Fprintf(opts.Log, "pushing the base %s first\n", opts.Base)
	_, err = opts.Client.PushBundle(ctx, base, mirror.PushOptions{Registry: opts.Site.Host, Prefix: opts.Site.Prefix, Jobs: opts.Jobs, Log: opts.Log})
	return err
}
