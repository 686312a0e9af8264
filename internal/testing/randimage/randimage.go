// Package randimage is for tests only: it fills a registry (a real
// docker-registry from testregistry) with small random images.
package randimage

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/p7bundle/p7bundle/manifests"
)

// Push stores a random linux/amd64 image of one layer of size bytes at
// host/repoTag (plain HTTP) and returns its digest.
func Push(host, repoTag string, size int64) (string, error) {
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
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

// PushChart stores a random image at host for every image the chart at
// chartDir names on the source registry, secretgen included, as build will
// ask for them through --mirror, and returns their digests by reference.
func PushChart(host, chartDir string) (map[string]string, error) {
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
		d, err := Push(host, strings.TrimPrefix(ref, manifests.DefaultSourceRegistry+"/"), 512)
		if err != nil {
			return nil, err
		}
		digests[ref] = d
	}
	return digests, nil
}
