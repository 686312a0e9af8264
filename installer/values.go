package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// ErrLint: the rendered release would pull from outside the site.
var ErrLint = errors.New("air-gap lint failed")

// ValuesOptions say how to turn a bundle's chart into site values.
type ValuesOptions struct {
	Bundle  string
	KeyPath string // optional for values and lint; checked when given
	SigPath string

	SiteRegistry, Prefix string
	Username, Password   string
	Files                []string // -f, in order
	Sets                 []string // --set, in order
	Sizing               *manifests.Sizing
	// Carried are the running release's user values an upgrade starts from.
	Carried map[string]interface{}
}

// Prepared is a bundle's chart with the values an install would use.
type Prepared struct {
	Manifest *bundle.Manifest
	Chart    *manifests.Chart
	Values   *manifests.AirgapValues
	// Verified is the signature check's outcome (nil when no key was given).
	Verified *bundle.Verified
}

// Prepare reads the chart from the bundle and builds the air-gap values.
func Prepare(opts ValuesOptions) (*Prepared, error) {
	p := &Prepared{}
	if opts.KeyPath != "" {
		v, err := bundle.LoadVerifier(opts.KeyPath)
		if err != nil {
			return nil, err
		}
		if p.Verified, err = bundle.VerifySignature(opts.Bundle, opts.SigPath, v); err != nil {
			return nil, err
		}
		return prepareFrom(p, p.Verified.Manifest, p.Verified.Chart, opts)
	}
	m, archive, err := bundle.ReadChart(opts.Bundle)
	if err != nil {
		return nil, err
	}
	return prepareFrom(p, m, archive, opts)
}

// prepareFrom builds the values from a chart archive already read.
func prepareFrom(p *Prepared, m *bundle.Manifest, archive []byte, opts ValuesOptions) (*Prepared, error) {
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
		SourceRegistry: m.SourceRegistry, SiteRegistry: opts.SiteRegistry, Prefix: opts.Prefix,
		Username: opts.Username, Password: opts.Password, Sizing: opts.Sizing,
		Carried: opts.Carried, BundleImages: bundleImages(m),
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// bundleImages are the manifest's references, each with its digest.
func bundleImages(m *bundle.Manifest) []string {
	var refs []string
	for _, img := range m.Images {
		refs = append(refs, img.Ref+"@"+img.Digest)
	}
	return refs
}

// WriteSecretFile writes data to path with mode 0600 via a temp file and
// rename, so the file is never readable by others, even half-written.
func WriteSecretFile(path string, data []byte) error {
	return writePrivate(path, data, func(tmp string) error { return os.Rename(tmp, path) })
}

// createPrivate writes a complete 0600 file and links it into place,
// which fails if path exists: files holding secrets are never replaced.
func createPrivate(path string, data []byte) error {
	return writePrivate(path, data, func(tmp string) error {
		if err := os.Link(tmp, path); err != nil {
			return fmt.Errorf("%s: %w (never overwritten)", path, err)
		}
		return nil
	})
}

// writePrivate writes data to a 0600 temp file beside path and hands it to
// commit, which puts it in place; the temp file never outlives the call.
func writePrivate(path string, data []byte, commit func(tmp string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return commit(tmp.Name())
}

// LintResult lists what the release would run and what is wrong with it.
type LintResult struct {
	Images    []manifests.Image    `json:"images"`
	Offenders []manifests.Offender `json:"offenders"`
}

// Lint renders the chart with the prepared values exactly as the install
// will, and checks that every image is under the site path and present in
// the site registry and that no value names the source registry.
func Lint(ctx context.Context, p *Prepared, client *mirror.Client, site, prefix, release, namespace string) (*LintResult, error) {
	sitePath := manifests.SitePath(site, prefix)
	images, offenders, err := manifests.AirgapLint(p.Chart, p.Values.Values, manifests.LintOptions{
		SourceRegistry: p.Manifest.SourceRegistry, SitePath: sitePath, ReleaseName: release, Namespace: namespace,
		BundleImages: bundleImages(p.Manifest),
	})
	if err != nil {
		return nil, err
	}
	res := &LintResult{Images: images, Offenders: offenders}
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
