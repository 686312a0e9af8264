// Package workload generates the benchmark's image set, deterministic from a
// seed: 30 images of a pSeven-like product tagged with one AppVersion, sizes
// spread like a real release (a few 300–600 MiB images, many 20–100 MiB at
// the 2 GiB reference size, all scaled to the requested total), common base
// layers shared between images, and about half of the bytes random, the
// rest text-like. Layers are stored as uncompressed tars (Raw) or, as
// `docker push` stores them, gzip-compressed (Gzip; the same tar content).
// Layers are generated, compressed, hashed and uploaded in one streaming
// pass, so memory stays flat at any size.
package workload

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

const (
	AppVersion   = "6.50.5000"
	ChartName    = "pseven-bench"
	ChartVersion = "2026.11.27"
	// The next monthly release (NextMonth).
	NextAppVersion   = "6.51.5100"
	NextChartVersion = "2026.12.25"
	SourceHost       = "registry.pseven.io"
	mediaLayer       = "application/vnd.oci.image.layer.v1.tar"
	mediaLayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaConfig      = "application/vnd.oci.image.config.v1+json"
	mediaOCIMan      = "application/vnd.oci.image.manifest.v1+json"
	referenceMiB     = 2048 // the plan is drawn at this size, then scaled
)

// Kind is how the workload's layers are stored in the source registry.
type Kind string

const (
	// Raw layers are uncompressed tars (application/vnd.oci.image.layer.v1.tar).
	Raw Kind = "raw"
	// Gzip layers are the same tars compressed as `docker push` stores them:
	// application/vnd.oci.image.layer.v1.tar+gzip, compress/gzip at its
	// default level, no name or mtime in the gzip header.
	Gzip Kind = "gzip"
)

// Kinds are all workload kinds, in report order.
var Kinds = []Kind{Raw, Gzip}

// ParseKind reads "raw" or "gzip".
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("workload %q: want one of raw, gzip", s)
}

// MediaType is the layer media type of kind.
func (k Kind) MediaType() string {
	if k == Gzip {
		return mediaLayerGzip
	}
	return mediaLayer
}

// imageNames are the 30 repositories; pseven-secretgen is the one p7bundle
// always adds.
var imageNames = []string{
	"pseven-appserver", "pseven-appworker", "pseven-extnodepkgs", "pseven-edgerouter", "pseven-keycloak",
	"pseven-redis", "pseven-postgres", "pseven-htcondormanager", "pseven-htcondorexecute", "pseven-htcondorsubmit",
	"pseven-upkeep", "pseven-blocknetworkgate", "pseven-files", "pseven-cache", "pseven-secretgen",
	"pseven-docs", "pseven-licensing", "pseven-scheduler", "pseven-notifier", "pseven-gateway",
	"pseven-metrics", "pseven-logshipper", "pseven-backup", "pseven-migrations", "pseven-webui",
	"pseven-solver-python", "pseven-solver-java", "pseven-reportgen", "pseven-sso-proxy", "pseven-healthcheck",
}

// Layer is one blob of the workload.
type Layer struct {
	ID   string    `json:"id"`
	Spec layerSpec `json:"-"`
	// Users are the images carrying it (more than one for base layers).
	Users  []string `json:"users"`
	Digest string   `json:"digest,omitempty"` // of the blob as stored
	Size   int64    `json:"size,omitempty"`   // of the blob as stored
	// DiffID and ContentSize are of the uncompressed tar (the blob itself
	// for Raw).
	DiffID      string `json:"diffID,omitempty"`
	ContentSize int64  `json:"contentSize,omitempty"`
	Random      int64  `json:"randomBytes,omitempty"`
}

// Image is one workload image.
type Image struct {
	Name   string   `json:"name"`
	Layers []string `json:"layers"` // layer IDs, bottom first
	Digest string   `json:"digest,omitempty"`
	Size   int64    `json:"size,omitempty"` // config + layers + manifest
}

// Workload is the generated image set.
type Workload struct {
	Seed uint64 `json:"seed"`
	Kind Kind   `json:"kind"`
	// TargetBytes is what the plan is scaled to: the uncompressed layer
	// bytes, so both kinds carry the same content (for Raw, about the
	// blob bytes).
	TargetBytes  int64  `json:"targetBytes"`
	AppVersion   string `json:"appVersion"`
	ChartVersion string `json:"chartVersion"`
	// ChangedBytes is, for NextMonth's result, the layer bytes regenerated.
	ChangedBytes int64    `json:"changedBytes,omitempty"`
	Images       []*Image `json:"images"`
	Layers       []*Layer `json:"layers"`
	// Filled in by Generate.
	UniqueBytes int64 `json:"uniqueBytes"` // every blob once, as stored
	// ContentBytes is UniqueBytes with every layer counted uncompressed
	// (equal to it for Raw).
	ContentBytes int64 `json:"contentBytes"`
	ImageBytes   int64 `json:"imageBytes"`  // sum of image sizes, shared blobs counted per image
	RandomBytes  int64 `json:"randomBytes"` // random file content within the layers
	Blobs        int   `json:"blobs"`
}

// Plan draws the Raw workload for seed and total (bytes of unique blobs).
func Plan(seed uint64, total int64) *Workload { return PlanKind(seed, total, Raw) }

// PlanKind draws the workload for seed and total (bytes of unique
// uncompressed layers) stored as kind. The plan and the tar content
// depend only on seed and total: a Gzip workload's layers are the Raw
// workload's, compressed.
func PlanKind(seed uint64, total int64, kind Kind) *Workload {
	r := rand.New(rand.NewPCG(seed, 0x9b7))
	w := &Workload{Seed: seed, Kind: kind, TargetBytes: total, AppVersion: AppVersion, ChartVersion: ChartVersion}
	layers := map[string]*Layer{}
	type draft struct {
		name   string
		shared []string
		unique []float64 // MiB at the reference size
	}
	// Shared bases at the reference size, in MiB.
	bases := []struct {
		id    string
		mib   float64
		users int
	}{{"base-os", 12, 30}, {"runtime-python", 40, 12}, {"runtime-jvm", 60, 5}, {"pseven-core", 100, 3}}

	perm := r.Perm(len(imageNames))
	// The first three in perm order are the big images (never secretgen).
	order := make([]string, 0, len(imageNames))
	for _, i := range perm {
		if imageNames[i] != "pseven-secretgen" {
			order = append(order, imageNames[i])
		}
	}
	order = append(order, "pseven-secretgen")
	big := map[string]bool{order[0]: true, order[1]: true, order[2]: true}
	sharedOf := map[string][]string{}
	for _, n := range order {
		sharedOf[n] = []string{"base-os"}
	}
	// python: the big ones plus the next nine; jvm: five others; core: the big ones.
	for i, n := range order {
		switch {
		case i < 12:
			sharedOf[n] = append(sharedOf[n], "runtime-python")
		case i < 17:
			sharedOf[n] = append(sharedOf[n], "runtime-jvm")
		}
		if big[n] {
			sharedOf[n] = append(sharedOf[n], "pseven-core")
		}
	}
	baseMiB := map[string]float64{}
	for _, b := range bases {
		baseMiB[b.id] = b.mib
	}
	var drafts []draft
	refTotal := 0.0
	for _, b := range bases {
		refTotal += b.mib
	}
	for _, n := range imageNames { // stable order in the output
		d := draft{name: n, shared: sharedOf[n]}
		target := 20 + r.Float64()*80
		if big[n] {
			target = 300 + r.Float64()*300
		}
		if n == "pseven-secretgen" {
			target = 25
		}
		rest := target
		for _, s := range d.shared {
			rest -= baseMiB[s]
		}
		rest = max(rest, 4)
		k := 1 + r.IntN(3)
		if big[n] {
			k = 3 + r.IntN(3)
		}
		// Split rest into k layers with random weights.
		ws := make([]float64, k)
		sum := 0.0
		for i := range ws {
			ws[i] = 0.3 + r.Float64()
			sum += ws[i]
		}
		for i := range ws {
			d.unique = append(d.unique, rest*ws[i]/sum)
		}
		refTotal += rest
		drafts = append(drafts, d)
	}
	scale := float64(total) / (refTotal * (1 << 20))
	toBytes := func(mib float64) int64 { return max(int64(math.Round(mib*scale*(1<<20))), 16<<10) }
	newLayer := func(id string, mib float64) *Layer {
		h := sha256.Sum256(fmt.Appendf(nil, "%d/%s", seed, id))
		l := &Layer{ID: id, Spec: layerSpec{
			Seed: uint64(h[0]) | uint64(h[1])<<8 | uint64(h[2])<<16 | uint64(h[3])<<24 | uint64(h[4])<<32 | uint64(h[5])<<40 | uint64(h[6])<<48 | uint64(h[7])<<56,
			Size: toBytes(mib), RandomFrac: 0.2 + 0.6*r.Float64(), Dir: "opt/" + id,
		}}
		layers[id] = l
		w.Layers = append(w.Layers, l)
		return l
	}
	for _, b := range bases {
		newLayer(b.id, b.mib)
	}
	for _, d := range drafts {
		img := &Image{Name: d.name}
		for _, s := range d.shared {
			img.Layers = append(img.Layers, s)
			layers[s].Users = append(layers[s].Users, d.name)
		}
		for i, mib := range d.unique {
			l := newLayer(fmt.Sprintf("%s-%d", strings.TrimPrefix(d.name, "pseven-"), i), mib)
			l.Users = []string{d.name}
			img.Layers = append(img.Layers, l.ID)
		}
		// A small per-image metadata layer, as real images have.
		l := newLayer(strings.TrimPrefix(d.name, "pseven-")+"-etc", 0)
		l.Spec.Size = 16<<10 + int64(r.IntN(48<<10))
		l.Spec.RandomFrac = 0.1
		l.Users = []string{d.name}
		img.Layers = append(img.Layers, l.ID)
		w.Images = append(w.Images, img)
	}
	return w
}

// Refs are the source references of the images, as the chart names them.
func (w *Workload) Refs() []string {
	var out []string
	for _, img := range w.Images {
		out = append(out, SourceHost+"/"+img.Name+":"+w.AppVersion)
	}
	return out
}

// Generate uploads the workload into the registry at host (plain HTTP),
// streaming every layer: generation, hashing and upload run in one pass
// and memory stays flat whatever the size. jobs layers are generated at once.
func (w *Workload) Generate(ctx context.Context, host string, jobs int, progress func(done, total int64)) error {
	c := &regClient{base: "http://" + host, hc: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}}
	byID := map[string]*Layer{}
	var total, done atomic.Int64
	for _, l := range w.Layers {
		byID[l.ID] = l
		total.Add(l.Spec.Size)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	// Biggest first, so the tail is short.
	ls := append([]*Layer(nil), w.Layers...)
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].Spec.Size > ls[j].Spec.Size })
	for _, l := range ls {
		if l.Digest != "" { // carried over from the previous release
			continue
		}
		g.Go(func() error {
			repo := l.Users[0]
			pr, pw := io.Pipe()
			encoded := make(chan layerBlob, 1)
			go func() {
				b, err := encodeLayer(pw, l.Spec, w.Kind)
				encoded <- b
				pw.CloseWithError(err)
			}()
			var b layerBlob
			// The stream is drained before sum is called: encodeLayer has sent.
			dgst, err := c.uploadStream(gctx, repo, pr, func() string { b = <-encoded; return b.Digest })
			pr.CloseWithError(err)
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.ID, err)
			}
			l.Digest, l.Size, l.DiffID, l.ContentSize, l.Random = dgst, b.Size, b.DiffID, b.ContentSize, b.Random
			if progress != nil {
				progress(done.Add(l.Spec.Size), total.Load())
			}
			// Shared layers: mounted into the other repositories.
			for _, u := range l.Users[1:] {
				if err := c.mount(gctx, u, repo, dgst); err != nil {
					return fmt.Errorf("mount %s into %s: %w", l.ID, u, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var mu sync.Mutex
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, img := range w.Images {
		g.Go(func() error {
			cfg := map[string]any{
				"architecture": "amd64", "os": "linux",
				"config": map[string]any{"Env": []string{"PATH=/usr/local/bin:/usr/bin:/bin", "P7_COMPONENT=" + img.Name}},
				"rootfs": map[string]any{"type": "layers", "diff_ids": layerDigests(img, byID)},
			}
			rawCfg, _ := json.Marshal(cfg)
			cfgDigest, err := c.uploadBytes(gctx, img.Name, rawCfg)
			if err != nil {
				return err
			}
			type desc struct {
				MediaType string `json:"mediaType"`
				Digest    string `json:"digest"`
				Size      int64  `json:"size"`
			}
			m := struct {
				SchemaVersion int    `json:"schemaVersion"`
				MediaType     string `json:"mediaType"`
				Config        desc   `json:"config"`
				Layers        []desc `json:"layers"`
			}{SchemaVersion: 2, MediaType: mediaOCIMan, Config: desc{mediaConfig, cfgDigest, int64(len(rawCfg))}}
			size := int64(len(rawCfg))
			for _, id := range img.Layers {
				l := byID[id]
				m.Layers = append(m.Layers, desc{w.Kind.MediaType(), l.Digest, l.Size})
				size += l.Size
			}
			rawMan, _ := json.Marshal(m)
			if err := c.putManifest(gctx, img.Name, w.AppVersion, rawMan); err != nil {
				return fmt.Errorf("manifest %s: %w", img.Name, err)
			}
			mu.Lock()
			img.Digest = digestOf(rawMan)
			img.Size = size + int64(len(rawMan))
			w.ImageBytes += img.Size
			w.UniqueBytes += int64(len(rawCfg) + len(rawMan))
			w.ContentBytes += int64(len(rawCfg) + len(rawMan))
			w.Blobs += 2
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, l := range w.Layers {
		w.UniqueBytes += l.Size
		w.ContentBytes += l.ContentSize
		w.RandomBytes += l.Random
		w.Blobs++
	}
	return nil
}

// NextMonth is the release after w (which must be generated): a new
// AppVersion and chart version, every image re-tagged, and layers of
// single images holding about frac of the unique bytes regenerated with
// new content (the images using them change; the others keep their digest).
func (w *Workload) NextMonth(frac float64) *Workload {
	n := &Workload{Seed: w.Seed, Kind: w.Kind, TargetBytes: w.TargetBytes, AppVersion: NextAppVersion, ChartVersion: NextChartVersion}
	var cands []*Layer
	for _, l := range w.Layers {
		if len(l.Users) == 1 {
			cands = append(cands, l)
		}
	}
	rank := func(l *Layer) string { return digestOf(fmt.Appendf(nil, "%d/%s/next", w.Seed, l.ID)) }
	sort.Slice(cands, func(i, j int) bool { return rank(cands[i]) < rank(cands[j]) })
	budget := int64(frac * float64(w.UniqueBytes))
	changed := map[string]bool{}
	for _, l := range cands {
		if n.ChangedBytes >= budget {
			break
		}
		if n.ChangedBytes+l.Size > budget+budget/4 {
			continue // keep close to frac
		}
		changed[l.ID] = true
		n.ChangedBytes += l.Size
	}
	for _, l := range w.Layers {
		c := *l
		c.Users = append([]string(nil), l.Users...)
		if changed[l.ID] {
			c.ID += "-next"
			c.Digest, c.Size, c.DiffID, c.ContentSize, c.Random = "", 0, "", 0, 0
			c.Spec.Seed ^= 0x9e3779b97f4a7c15
		}
		n.Layers = append(n.Layers, &c)
	}
	for _, img := range w.Images {
		ni := &Image{Name: img.Name}
		for _, id := range img.Layers {
			if changed[id] {
				id += "-next"
			}
			ni.Layers = append(ni.Layers, id)
		}
		n.Images = append(n.Images, ni)
	}
	return n
}

func layerDigests(img *Image, byID map[string]*Layer) []string {
	var out []string
	for _, id := range img.Layers {
		out = append(out, byID[id].DiffID)
	}
	return out
}

// layerBlob is what encodeLayer learned about a layer while writing it.
type layerBlob struct {
	Digest, DiffID    string // of the blob as stored; of the uncompressed tar
	Size, ContentSize int64
	Random            int64 // random file content bytes
}

// encodeLayer streams the blob of spec, stored as kind, to w: the tar
// itself (Raw), or the tar through compress/gzip at its default level
// (Gzip), hashing both sides on the way.
func encodeLayer(w io.Writer, spec layerSpec, kind Kind) (layerBlob, error) {
	bh := sha256.New()
	var bn countingWriter
	blob := io.MultiWriter(w, bh, &bn)
	var b layerBlob
	var err error
	switch kind {
	case Raw:
		bw := bufio.NewWriterSize(blob, 1<<20)
		if b.Random, _, err = writeLayer(bw, spec); err == nil {
			err = bw.Flush()
		}
	case Gzip:
		// deflate emits small writes: buffer them before the pipe.
		zbuf := bufio.NewWriterSize(blob, 256<<10)
		zw := gzip.NewWriter(zbuf)
		th := sha256.New()
		var tn countingWriter
		bw := bufio.NewWriterSize(io.MultiWriter(zw, th, &tn), 1<<20)
		if b.Random, _, err = writeLayer(bw, spec); err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = zw.Close()
		}
		if err == nil {
			err = zbuf.Flush()
		}
		b.DiffID, b.ContentSize = "sha256:"+hex.EncodeToString(th.Sum(nil)), tn.n
	default:
		return b, fmt.Errorf("unknown workload kind %q", kind)
	}
	b.Digest, b.Size = "sha256:"+hex.EncodeToString(bh.Sum(nil)), bn.n
	if kind == Raw {
		b.DiffID, b.ContentSize = b.Digest, b.Size
	}
	return b, err
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// WriteChart writes a minimal chart directory naming every image in its
// values (and one template), so `p7bundle build` discovers all 30.
func (w *Workload) WriteChart(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
		return err
	}
	chart := fmt.Sprintf("apiVersion: v2\nname: %s\ndescription: p7bundle benchmark workload (generated)\ntype: application\nversion: %s\nappVersion: %q\n",
		ChartName, w.ChartVersion, w.AppVersion)
	var values strings.Builder
	values.WriteString("# Generated by bench/cmd/p7bench: every image of the benchmark workload.\nimages:\n")
	for _, img := range w.Images {
		fmt.Fprintf(&values, "  %s: %s/%s:%s\n", strings.TrimPrefix(img.Name, "pseven-"), SourceHost, img.Name, w.AppVersion)
	}
	tmpl := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-appserver
spec:
  selector:
    matchLabels: {app: appserver}
  template:
    metadata:
      labels: {app: appserver}
    spec:
      containers:
        - name: appserver
          image: {{ .Values.images.appserver }}
`
	for name, data := range map[string]string{"Chart.yaml": chart, "values.yaml": values.String(), "templates/appserver.yaml": tmpl} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// regClient speaks just enough of the distribution API to stream blobs in.
type regClient struct {
	base string
	hc   *http.Client
}

func (c *regClient) do(req *http.Request, want int) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	return resp, nil
}

func (c *regClient) startUpload(ctx context.Context, repo string) (*url.URL, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp.Request.URL.Parse(resp.Header.Get("Location"))
}

// uploadStream PATCHes body as one chunked stream, then commits it with the
// digest that sum returns once body is drained.
func (c *regClient) uploadStream(ctx context.Context, repo string, body io.Reader, sum func() string) (string, error) {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), io.NopCloser(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if loc, err = resp.Request.URL.Parse(resp.Header.Get("Location")); err != nil {
		return "", err
	}
	dgst := sum()
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), nil)
	if resp, err = c.do(req, http.StatusCreated); err != nil {
		return "", err
	}
	resp.Body.Close()
	return dgst, nil
}

func (c *regClient) uploadBytes(ctx context.Context, repo string, data []byte) (string, error) {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return "", err
	}
	dgst := digestOf(data)
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return dgst, nil
}

func (c *regClient) mount(ctx context.Context, repo, from, dgst string) error {
	u := c.base + "/v2/" + repo + "/blobs/uploads/?mount=" + url.QueryEscape(dgst) + "&from=" + url.QueryEscape(from)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (c *regClient) putManifest(ctx context.Context, repo, tag string, raw []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(raw))
	req.Header.Set("Content-Type", mediaOCIMan)
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
