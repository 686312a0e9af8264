package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Ingest pushes the workload's images from an OCI image layout (an extracted
// bundle's oci/ directory) into the registry at host, under prefix/, with as
// little client work as possible: every distinct blob is streamed from its
// file once (jobs at a time, biggest first, digests taken from the file
// names, nothing hashed on this side), then mounted into the other
// repositories that need it, then manifests and tags are put. What this
// achieves is the registry's own ingest ceiling.
func Ingest(ctx context.Context, host, layout, prefix string, w *Workload, jobs int) error {
	c := &regClient{base: "http://" + host, hc: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2 * jobs}}}
	type blob struct {
		digest string
		size   int64
		repos  []string
	}
	blobs := map[string]*blob{}
	manifests := map[string][]byte{}
	var order []*blob
	for _, img := range w.Images {
		repo := prefix + "/" + img.Name
		raw, err := os.ReadFile(blobPath(layout, img.Digest))
		if err != nil {
			return err
		}
		manifests[img.Name] = raw
		var m struct {
			Config struct {
				Digest string `json:"digest"`
				Size   int64  `json:"size"`
			} `json:"config"`
			Layers []struct {
				Digest string `json:"digest"`
				Size   int64  `json:"size"`
			} `json:"layers"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("manifest of %s: %w", img.Name, err)
		}
		for _, d := range append(m.Layers, m.Config) {
			b := blobs[d.Digest]
			if b == nil {
				b = &blob{digest: d.Digest, size: d.Size}
				blobs[d.Digest] = b
				order = append(order, b)
			}
			b.repos = append(b.repos, repo)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].size > order[j].size })
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, b := range order {
		g.Go(func() error {
			f, err := os.Open(blobPath(layout, b.digest))
			if err != nil {
				return err
			}
			defer f.Close()
			return c.uploadFile(gctx, b.repos[0], b.digest, b.size, f)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, img := range w.Images {
		repo := prefix + "/" + img.Name
		g.Go(func() error {
			for _, b := range order {
				for _, r := range b.repos[1:] {
					if r == repo {
						if err := c.mount(gctx, repo, b.repos[0], b.digest); err != nil {
							return err
						}
					}
				}
			}
			return c.putManifest(gctx, repo, AppVersion, manifests[img.Name])
		})
	}
	return g.Wait()
}

func blobPath(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", string(filepath.Separator), 1))
}

// uploadFile is a monolithic upload: POST, then one PUT carrying the bytes.
func (c *regClient) uploadFile(ctx context.Context, repo, digest string, size int64, f *os.File) error {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), f)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
