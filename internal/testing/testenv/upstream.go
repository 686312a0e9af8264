// Package testenv stands up what a build host would see upstream: a real
// docker-registry (TLS + htpasswd) standing in for registry.pseven.io and
// holding a runnable fixture image for every image the chart names. Tests
// and the demo share it.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/p7bundle/p7bundle/internal/testing/fixture"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/manifests"
)

// Upstream is a running stand-in for the vendor registry.
type Upstream struct {
	*testregistry.Registry
	// Images are the chart's images as discovered (secretgen included).
	Images []manifests.Image
	// Digests maps each original reference to the digest pushed upstream
	// (the index digest for multi-platform images).
	Digests map[string]string
	// MultiPlatform lists the references pushed as linux/amd64+arm64 indexes.
	MultiPlatform []string
}

// MultiPlatformRepo is pushed as an index so builds exercise platform filtering.
const MultiPlatformRepo = "pseven-app"

// StartUpstream starts the registry in dir and pushes the chart's images,
// mapping registry.pseven.io/<path> to <registry>/<path>. Stop it when done.
func StartUpstream(ctx context.Context, chartPath, dir string) (*Upstream, error) {
	return StartUpstreamWith(ctx, chartPath, testregistry.Options{
		Username: "builder", Password: "upstream-s3cret-" + filepath.Base(dir), TLS: true, Dir: dir,
	})
}

// StartUpstreamWith is StartUpstream with the registry's options (token
// auth, say); opts.Dir is where it runs.
func StartUpstreamWith(ctx context.Context, chartPath string, opts testregistry.Options) (*Upstream, error) {
	images, err := chartImages(chartPath)
	if err != nil {
		return nil, err
	}
	reg, err := testregistry.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	u := &Upstream{Registry: reg, Digests: map[string]string{}}
	if u.Images, err = u.push(ctx, images, nil); err != nil {
		reg.Stop()
		return nil, err
	}
	return u, nil
}

// PushRelease pushes the images of another chart (next month's release)
// into the same registry; variants gives the named repositories new
// content (the components that changed), the others are re-tagged.
func (u *Upstream) PushRelease(ctx context.Context, chartPath string, variants map[string]string) ([]manifests.Image, error) {
	images, err := chartImages(chartPath)
	if err != nil {
		return nil, err
	}
	return u.push(ctx, images, variants)
}

func chartImages(chartPath string) ([]manifests.Image, error) {
	ch, err := manifests.LoadChart(chartPath)
	if err != nil {
		return nil, err
	}
	return manifests.DiscoverImages(ch, manifests.DiscoverOptions{})
}

func (u *Upstream) push(ctx context.Context, images []manifests.Image, variants map[string]string) ([]manifests.Image, error) {
	prefix := manifests.DefaultSourceRegistry + "/"
	var rel []string
	for _, img := range images {
		if !strings.HasPrefix(img.Ref, prefix) {
			return nil, fmt.Errorf("fixture image %s is not under %s", img.Ref, prefix)
		}
		rel = append(rel, strings.TrimPrefix(img.Ref, prefix))
		if strings.HasPrefix(img.Ref, prefix+MultiPlatformRepo+":") {
			u.MultiPlatform = append(u.MultiPlatform, img.Ref)
		}
	}
	pushed, err := fixture.PushImages(ctx, fixture.Options{
		Registry: u.Host, Username: u.Username, Password: u.Password, CAFile: u.CAFile,
		MultiPlatform: []string{MultiPlatformRepo}, Variants: variants,
	}, rel)
	if err != nil {
		return nil, err
	}
	for i, r := range rel {
		u.Digests[images[i].Ref] = pushed[r]
	}
	return images, nil
}

// MirrorFlag is the --mirror value that sends source pulls to this registry.
func (u *Upstream) MirrorFlag() string {
	return manifests.DefaultSourceRegistry + "=" + u.Host
}

// RepoRoot is the module root (fixture.RepoRoot).
func RepoRoot() string { return fixture.RepoRoot() }

// FixtureChart is the pSeven-like chart directory.
func FixtureChart() string {
	return filepath.Join(RepoRoot(), "testdata", "charts", "pseven")
}

// Tool returns the path of a helper binary built by `make test-deps`
// ($P7BUNDLE_TOOLS_BIN or .cache/tools/bin).
func Tool(name string) (string, error) {
	dir := os.Getenv("P7BUNDLE_TOOLS_BIN")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), ".cache", "tools", "bin")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found in %s: run \"make test-deps\"", name, dir)
	}
	return p, nil
}
