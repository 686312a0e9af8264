package installer

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/mirror"
)

// Export is `p7bundle export`: images of a verified bundle written for
// tools that read files: an OCI image layout (trivy --input, skopeo oci:,
// oras --oci-layout) or a `docker load` / `podman load` archive.
type Export struct {
	Bundle string
	// Base is a differential bundle's base, for the blobs it leaves out.
	Base      string
	Signature Signature
	// OCILayout is a directory to create; DockerArchive a file to create.
	// Exactly one is set. Neither is ever overwritten.
	OCILayout, DockerArchive string
	// Images are original references (registry.pseven.io/pseven-app:6.47)
	// or the same without the source registry; default every image (an OCI
	// layout only: a docker archive names its images).
	Images []string
	Log    io.Writer
}

// Exported is what Export wrote.
type Exported struct {
	Path   string   `json:"path"`
	Format string   `json:"format"`
	Images []string `json:"images"`
}

// Run verifies, selects and writes, through a temporary name.
func (o *Export) Run(ctx context.Context) (*Exported, error) {
	e := *o
	if e.Log == nil {
		e.Log = io.Discard
	}
	if (e.OCILayout == "") == (e.DockerArchive == "") {
		return nil, fmt.Errorf("%w: export: give one of an OCI layout directory or a docker archive file", ErrOptions)
	}
	if e.DockerArchive != "" && len(e.Images) == 0 {
		return nil, fmt.Errorf("%w: export: a docker archive needs the images to hold (--image REF)", ErrOptions)
	}
	out := e.OCILayout + e.DockerArchive
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("%w: %s already exists and is never overwritten", ErrOutput, out)
	}
	if err := atomicfile.Check(out, false); err != nil {
		return nil, err
	}
	paths := []string{e.Bundle}
	if e.Base != "" {
		paths = append(paths, e.Base)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: bundle: %w", ErrInput, err)
		}
	}
	var archives []*bundle.Archive
	defer func() {
		for _, a := range archives {
			a.Close()
		}
	}()
	for _, p := range paths {
		a, err := e.Signature.open(ctx, p, e.Log)
		if err != nil {
			return nil, err
		}
		archives = append(archives, a)
	}
	if b := archives[0].Manifest().Base; b != nil && e.Base == "" {
		n, _ := archives[0].Manifest().OmittedBytes()
		return nil, fmt.Errorf("%w: %s is differential over %s (it leaves out %d blobs): pass --base %s", bundle.ErrBase, e.Bundle, b.Name, n, b.Name)
	}
	images, err := selectImages(archives[0].Manifest(), e.Images)
	if err != nil {
		return nil, err
	}
	store := mirror.NewArchiveStore(archives...)
	res := &Exported{Path: out}
	for _, img := range images {
		res.Images = append(res.Images, img.Ref)
	}
	if e.OCILayout != "" {
		res.Format = "oci-layout"
		tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrOutput, err)
		}
		defer os.RemoveAll(tmp)
		if err := store.ExportOCILayout(ctx, tmp, images); err != nil {
			return nil, fmt.Errorf("export %s: %w", out, err)
		}
		os.Chmod(tmp, 0o755)
		if err := os.Rename(tmp, out); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrOutput, err)
		}
		return res, nil
	}
	res.Format = "docker-archive"
	err = atomicfile.CreateFunc(out, 0o644, func(w io.Writer) error {
		return store.ExportDockerArchive(ctx, w, images)
	})
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", out, err)
	}
	return res, nil
}

// selectImages finds each ref among the bundle's images, by its original
// reference or by that reference without the source registry.
func selectImages(m *bundle.Manifest, refs []string) ([]bundle.Image, error) {
	if len(refs) == 0 {
		return m.Images, nil
	}
	var out []bundle.Image
	for _, ref := range refs {
		found := false
		for _, img := range m.Images {
			if img.Ref == ref || strings.TrimPrefix(img.Ref, m.SourceRegistry+"/") == ref {
				out, found = append(out, img), true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: image %s is not in the bundle (p7bundle inspect lists its images)", ErrInput, ref)
		}
	}
	return out, nil
}
