package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// ErrLint: the rendered release would pull from outside the site.
var ErrLint = errors.New("air-gap lint failed")

// ErrOutput: an output file cannot be written.
var ErrOutput = errors.New("cannot write output")

// Values is `p7bundle values`: the site values for a bundle's chart, every
// image reference moved to the site registry and registry.* set, written
// to Output (mode 0600).
type Values struct {
	Bundle string
	// Signature is checked when it names a key.
	Signature
	Site   SiteRegistry
	Files  []string       // -f, in order; the first one's comments and order are kept
	Sets   manifests.Sets // --set and its kin, applied as Helm does
	Output string         // default DefaultValuesFile
	Log    io.Writer
}

// ValuesResult is the written values and how they were made.
type ValuesResult struct {
	*Prepared
	Output   string
	SitePath string
}

// Run writes the values file.
func (v *Values) Run(ctx context.Context) (*ValuesResult, error) {
	out := v.Output
	if out == "" {
		out = DefaultValuesFile
	}
	if err := checkOutputFile(out, true); err != nil {
		return nil, err
	}
	p, site, err := prepare(ctx, v.Bundle, v.Signature, v.Site, v.Files, v.Sets, orDiscard(v.Log))
	if err != nil {
		return nil, err
	}
	if err := writeSecretFile(out, p.Values.Document); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	return &ValuesResult{Prepared: p, Output: out, SitePath: site.Path()}, nil
}

// valuesInput says how to turn a bundle's chart into site values.
type valuesInput struct {
	Bundle string
	Site   SiteRegistry // resolved
	Files  []string
	Sets   manifests.Sets
	Sizing *manifests.Sizing
	// Carried are the running release's user values an upgrade starts from.
	Carried map[string]interface{}
}

// Prepared is a bundle's chart with the values an install would use.
type Prepared struct {
	Manifest *bundle.Manifest
	Chart    *manifests.Chart
	Values   *manifests.AirgapValues
	// Verified says the bundle's signature was checked (a key was given).
	Verified bool
}

// prepare reads the chart from the bundle (checking its signature when a
// key is given) and builds the air-gap values: the start of values and lint.
func prepare(ctx context.Context, path string, sig Signature, site SiteRegistry, files []string, sets manifests.Sets, log io.Writer) (*Prepared, SiteRegistry, error) {
	site, err := site.resolved()
	if err != nil {
		return nil, site, err
	}
	if err := checkValuesInputs(files, sets); err != nil {
		return nil, site, err
	}
	in := valuesInput{Bundle: path, Site: site, Files: files, Sets: sets}
	a, verified, err := sig.optional(ctx, path, log)
	if err != nil {
		return nil, site, err
	}
	defer a.Close()
	chart, err := a.Chart()
	if err != nil {
		return nil, site, fmt.Errorf("bundle %s: %w", path, err)
	}
	p, err := prepareFrom(&Prepared{Verified: verified}, a.Manifest(), chart, in)
	return p, site, err
}

// prepareFrom builds the values from a chart archive already read.
func prepareFrom(p *Prepared, m *bundle.Manifest, archive []byte, opts valuesInput) (*Prepared, error) {
	var err error
	p.Manifest = m
	if p.Chart, err = manifests.LoadChartArchive(opts.Bundle+":"+m.Chart.Path, archive); err != nil {
		return nil, err
	}
	var files []manifests.ValuesFile
	for _, f := range opts.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: values file: %v", manifests.ErrInvalidValues, err)
		}
		files = append(files, manifests.ValuesFile{Name: f, Data: data})
	}
	p.Values, err = manifests.AirgapValuesFor(p.Chart, files, opts.Sets, manifests.ValuesOptions{
		SourceRegistry: m.SourceRegistry, SiteRegistry: opts.Site.Host, Prefix: opts.Site.Prefix,
		Username: opts.Site.Username, Password: opts.Site.Password, Sizing: opts.Sizing,
		Carried: opts.Carried, BundleImages: bundleImages(m),
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// bundleImages are the manifest's references, each with its digest; not
// the carried signatures (sha256-<hex>.sig in the same repository would make
// the image's own tag ambiguous when an upgrade repoints carried values).
func bundleImages(m *bundle.Manifest) []string {
	var refs []string
	for _, img := range m.ContainerImages() {
		refs = append(refs, img.Ref+"@"+img.Digest.String())
	}
	return refs
}

// writeSecretFile writes data to path with mode 0600 via a temp file and
// rename, so the file is never readable by others, even half-written.
func writeSecretFile(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}

// checkOutputFile fails before any work when path could not be written:
// its directory refuses new files, or (unless replace) it exists already.
func checkOutputFile(path string, replace bool) error {
	err := atomicfile.Check(path, replace)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %w and is never overwritten: pass another -o", ErrOutput, err)
	} else if err != nil {
		return fmt.Errorf("%w: %w", ErrOutput, err)
	}
	return nil
}

// createPrivate writes a new 0600 file; files holding secrets are never replaced.
func createPrivate(path string, data []byte) error {
	return atomicfile.Create(path, data, 0o600)
}

// LintResult lists what the release would run and what is wrong with it.
type LintResult struct {
	Images    []manifests.Image    `json:"images"`
	Offenders []manifests.Offender `json:"offenders"`
	SitePath  string               `json:"-"`
}

// Lint is `p7bundle lint`: it renders the chart with the site values
// exactly as install will, and checks that every image is under the site
// path and present in the site registry and that no value names the
// source registry.
type Lint struct {
	Bundle string
	// Signature is checked when it names a key.
	Signature
	Site               SiteRegistry
	Files              []string
	Sets               manifests.Sets
	Release, Namespace string // default manifests.DefaultReleaseName, DefaultNamespace
	Log                io.Writer
	// Client overrides the site registry client built from Site.
	Client *mirror.Client
}

// Run lints; the result's Err says whether the release would leave the site.
func (l *Lint) Run(ctx context.Context) (*LintResult, error) {
	p, site, err := prepare(ctx, l.Bundle, l.Signature, l.Site, l.Files, l.Sets, orDiscard(l.Log))
	if err != nil {
		return nil, err
	}
	client := l.Client
	if client == nil {
		if client, err = site.client(site.Guard(orDiscard(l.Log))); err != nil {
			return nil, err
		}
	}
	release, namespace := l.Release, l.Namespace
	if release == "" {
		release = manifests.DefaultReleaseName
	}
	if namespace == "" {
		namespace = manifests.DefaultNamespace
	}
	return lint(ctx, p, client, site, release, namespace)
}

func lint(ctx context.Context, p *Prepared, client *mirror.Client, site SiteRegistry, release, namespace string) (*LintResult, error) {
	sitePath := site.Path()
	images, offenders, err := manifests.AirgapLint(p.Chart, p.Values.Values, manifests.LintOptions{
		SourceRegistry: p.Manifest.SourceRegistry, SitePath: sitePath, ReleaseName: release, Namespace: namespace,
		BundleImages: bundleImages(p.Manifest),
	})
	if err != nil {
		return nil, err
	}
	res := &LintResult{Images: images, Offenders: offenders, SitePath: sitePath}
	missing := make([]error, len(images))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, img := range images {
		if !strings.HasPrefix(img.Ref, sitePath+"/") {
			continue
		}
		g.Go(func() error {
			ref, err := registry.ParseReference(img.Ref)
			if err != nil {
				missing[i] = err
				return nil
			}
			repo, err := client.Repository(ref)
			if err != nil {
				return err
			}
			if _, err := repo.Resolve(gctx, ref.Reference); err != nil {
				err = mirror.Classify(err)
				if errors.Is(err, mirror.ErrUnauthorized) || errors.Is(err, mirror.ErrUnreachable) {
					return err
				}
				missing[i] = err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, err := range missing {
		if err != nil {
			for _, src := range images[i].Sources {
				res.Offenders = append(res.Offenders, manifests.Offender{What: images[i].Ref, Where: strings.TrimPrefix(src, "template:"), Problem: "missing from the site registry"})
			}
		}
	}
	return res, nil
}

// Err returns ErrLint listing the offenders, or nil.
func (r *LintResult) Err() error {
	if len(r.Offenders) == 0 {
		return nil
	}
	var parts []string
	for _, o := range r.Offenders {
		parts = append(parts, o.String())
	}
	return fmt.Errorf("%w: %d offenders: %s", ErrLint, len(r.Offenders), strings.Join(parts, "; "))
}
