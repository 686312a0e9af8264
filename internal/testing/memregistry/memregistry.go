// Package memregistry is for tests only: an in-memory OCI registry
// (go-containerregistry's) holding small random images, for unit tests
// of pure logic that need a registry but not a real one. Tests about
// registries use testregistry (a real docker-registry) instead.
package memregistry

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/p7bundle/p7bundle/manifests"
)

// Registry is a running in-memory registry.
type Registry struct {
	// Host is 127.0.0.1:PORT, spoken to in plain HTTP.
	Host string
	// Requests counts the requests it answered.
	Requests atomic.Int64
	srv      *httptest.Server
}

// Start starts an empty registry on a free loopback port; Close stops it.
func Start() *Registry {
	r, _ := StartOn(nil)
	return r
}

// StartOn starts an empty registry on l (nil: a free loopback port).
func StartOn(l net.Listener) (*Registry, error) {
	r := &Registry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.Requests.Add(1)
		reg.ServeHTTP(w, req)
	}))
	if l != nil {
		r.srv.Listener.Close()
		r.srv.Listener = l
	}
	r.srv.Start()
	r.Host = strings.TrimSuffix(strings.TrimPrefix(r.srv.URL, "http://"), ":80")
	return r, nil
}

func (r *Registry) Close() { r.srv.Close() }

// PushRandom stores a random linux/amd64 image of one layer of size bytes
// at repo:tag (a reference without host) and returns its digest.
func (r *Registry) PushRandom(repoTag string, size int64) (string, error) {
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		return "", err
	}
	img, err := random.Image(size, 1)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	if err := remote.Write(ref, img); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// Tags counts the tags of every repository.
func (r *Registry) Tags() (int, error) {
	reg, err := name.NewRegistry(r.Host, name.Insecure)
	if err != nil {
		return 0, err
	}
	repos, err := remote.Catalog(context.Background(), reg)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, repo := range repos {
		tags, err := remote.List(reg.Repo(repo))
		if err != nil {
			return 0, err
		}
		n += len(tags)
	}
	return n, nil
}

// PushChartImages stores a random image for every image the chart at
// chartDir names on the source registry, secretgen included, as build
// will ask for them, and returns their digests by reference.
func (r *Registry) PushChartImages(chartDir string) (map[string]string, error) {
	ch, err := manifests.LoadChart(chartDir)
	if err != nil {
		return nil, err
	}
	images, err := manifests.DiscoverImages(ch, manifests.DiscoverOptions{SourceRegistry: manifests.DefaultSourceRegistry})
	if err != nil {
		return nil, err
	}
	refs := []string{manifests.SecretgenRef(manifests.DefaultSourceRegistry, ch.AppVersion)}
	for _, img := range images {
		refs = append(refs, img.Ref)
	}
	digests := map[string]string{}
	for _, ref := range refs {
		d, err := r.PushRandom(strings.TrimPrefix(ref, manifests.DefaultSourceRegistry+"/"), 512)
		if err != nil {
			return nil, err
		}
		digests[ref] = d
	}
	return digests, nil
}
