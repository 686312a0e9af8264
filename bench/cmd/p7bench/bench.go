package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/internal/probeimage"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// Config is one benchmark run.
type Config struct {
	Size    int64 // unique workload bytes of the timed runs
	RSSSize int64 // second size, for peak RSS flatness (0 skips it)
	Runs    int
	Seed    uint64
	// Workloads are measured one after the other, each with every pair
	// (default: workload.Kinds, raw and gzip).
	Workloads []workload.Kind
	Bin       string // p7bundle binary
	Tools     string // dir with crane, oras, cosign
	Out       string // directory for latest.md and latest.json ("" writes nothing)
	Work      string // scratch dir (default a temp dir, removed at the end)
	Keep      bool   // keep Work
	Log       io.Writer
	// WAN is the WAN-shaped build scenario, run on the gzip workload.
	WAN WAN
	// Hauler is a Hauler v2 binary to measure beside p7bundle ("" skips it).
	Hauler string
}

const keyPassword = "p7bench-throwaway"

// Bench holds the state of one run.
type Bench struct {
	cfg   Config
	r     *runner
	res   *Result
	tools map[string]string // name -> path
	key   string            // key prefix
	regs  []*testregistry.Registry
	start time.Time
	// The workload being measured; measurement IDs are "<wl>/<step>".
	wl     workload.Kind
	cur    *WorkloadResult
	hauler *hauler // nil without Config.Hauler
}

// Run measures everything and writes the results.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Runs <= 0 {
		cfg.Runs = 3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = workload.Kinds
	}
	b := &Bench{cfg: cfg, start: time.Now(), tools: map[string]string{}}
	var err error
	if b.cfg.Bin, err = filepath.Abs(cfg.Bin); err != nil {
		return nil, err
	}
	if err := b.findTools(); err != nil {
		return nil, err
	}
	if cfg.Hauler != "" {
		p, err := exec.LookPath(cfg.Hauler)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			return nil, fmt.Errorf("HAULER=%s: %w", cfg.Hauler, err)
		}
		b.hauler = &hauler{bin: p}
	}
	if b.cfg.Work == "" {
		if b.cfg.Work, err = os.MkdirTemp("", "p7bench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(b.cfg.Work, 0o755); err != nil {
		return nil, err
	}
	b.cfg.Work, _ = filepath.Abs(b.cfg.Work)
	defer func() {
		for _, reg := range b.regs {
			reg.Stop()
		}
		if !b.cfg.Keep {
			os.RemoveAll(b.cfg.Work)
		}
	}()
	if err := b.checkDisk(); err != nil {
		return nil, err
	}
	dockerCfg := filepath.Join(b.cfg.Work, "docker-config")
	os.MkdirAll(dockerCfg, 0o700)
	b.r = &runner{
		timeBin: b.tools["time"],
		work:    b.cfg.Work,
		// No credentials or proxies from the environment: loopback, plain HTTP.
		env: []string{"COSIGN_PASSWORD=" + keyPassword, "DOCKER_CONFIG=" + dockerCfg,
			"HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "NO_PROXY=*"},
		log: b.logf,
	}
	b.res = newResult(b.cfg)
	b.res.WorkDir = b.cfg.Work
	b.res.Dir, _ = os.Getwd()
	b.res.Machine = machineFacts(b.cfg.Work)
	b.res.Tools = b.toolVersions(ctx)

	b.key = filepath.Join(b.cfg.Work, "cosign")
	if _, err := b.r.run(ctx, cmdSpec{Argv: []string{b.cfg.Bin, "keygen", "--output-prefix", b.key}}); err != nil {
		return nil, err
	}
	for _, k := range b.cfg.Workloads {
		b.wl, b.cur = k, b.res.workload(k)
		b.logf("%s workload (layers %s)", k, k.MediaType())
		if err := b.mainSize(ctx); err != nil {
			return nil, fmt.Errorf("%s workload: %w", k, err)
		}
		if b.cfg.RSSSize > 0 {
			if err := b.secondSize(ctx); err != nil {
				return nil, fmt.Errorf("%s workload: %w", k, err)
			}
		}
		// Registries store gzip layers: that is what a WAN build pulls.
		if b.cfg.WAN.Size > 0 && k == workload.Gzip {
			if err := b.wan(ctx); err != nil {
				return nil, fmt.Errorf("%s workload: WAN build: %w", k, err)
			}
		}
		os.RemoveAll(b.dir())
	}
	b.res.Machine.LoadAfter = loadAvg()
	b.res.finish(time.Since(b.start))
	if b.cfg.Out != "" {
		if err := b.res.write(b.cfg.Out); err != nil {
			return nil, err
		}
		b.logf("wrote %s and %s", filepath.Join(b.cfg.Out, "latest.md"), filepath.Join(b.cfg.Out, "latest.json"))
	}
	return b.res, nil
}

func (b *Bench) logf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

func (b *Bench) findTools() error {
	for _, t := range []struct{ name, path string }{
		{"crane", filepath.Join(b.cfg.Tools, "crane")},
		{"oras", filepath.Join(b.cfg.Tools, "oras")},
		{"cosign", filepath.Join(b.cfg.Tools, "cosign")},
		{"zstd", "zstd"}, {"tar", "tar"}, {"openssl", "openssl"}, {"sha256sum", "sha256sum"},
		{"docker-registry", testregistry.DefaultBinary},
	} {
		p, err := exec.LookPath(t.path)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			return fmt.Errorf("%s not found (%s): run \"make bench-deps\"", t.name, t.path)
		}
		b.tools[t.name] = p
	}
	if _, err := os.Stat(b.cfg.Bin); err != nil {
		return fmt.Errorf("p7bundle binary %s: %w (run \"make build\")", b.cfg.Bin, err)
	}
	if p, err := exec.LookPath("/usr/bin/time"); err == nil {
		b.tools["time"] = p
	}
	return nil
}

// id is the measurement ID of step in the current workload.
func (b *Bench) id(step string) string { return string(b.wl) + "/" + step }

// dir is the scratch directory of the current workload (and its parts).
func (b *Bench) dir(parts ...string) string {
	return filepath.Join(append([]string{b.cfg.Work, string(b.wl)}, parts...)...)
}

// check records a correctness check of the current workload.
func (b *Bench) check(name string, ok bool, detail string) {
	b.res.check(string(b.wl), name, ok, detail)
}

// checkDisk fails early when the scratch filesystem cannot hold a round:
// about 5x the workload at the main size and 3.5x at the second size.
func (b *Bench) checkDisk() error {
	need := max(5*b.cfg.Size, 7*b.cfg.RSSSize/2) + 1<<30
	if free := freeBytes(b.cfg.Work); free < need {
		return fmt.Errorf("%s has %s free, the benchmark needs about %s", b.cfg.Work, human(free), human(need))
	}
	return nil
}

// startRegistry starts a fresh, empty docker-registry in dir.
func (b *Bench) startRegistry(ctx context.Context, dir string) (*testregistry.Registry, error) {
	reg, err := testregistry.Start(ctx, testregistry.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	b.regs = append(b.regs, reg)
	b.r.addRegistry(reg.PID())
	return reg, nil
}

func (b *Bench) stopRegistry(reg *testregistry.Registry) {
	b.r.removeRegistry(reg.PID())
	reg.Stop()
	os.RemoveAll(reg.Dir)
	for i, r := range b.regs {
		if r == reg {
			b.regs = append(b.regs[:i], b.regs[i+1:]...)
			break
		}
	}
}

// source starts a registry holding the workload of size bytes and writes the chart.
func (b *Bench) source(ctx context.Context, dir string, size int64) (*testregistry.Registry, *workload.Workload, string, error) {
	reg, err := b.startRegistry(ctx, filepath.Join(dir, "source-registry"))
	if err != nil {
		return nil, nil, "", err
	}
	w := workload.PlanKind(b.cfg.Seed, size, b.wl)
	start := time.Now()
	var mu sync.Mutex // Generate reports from each of its workers
	last := time.Now()
	err = w.Generate(ctx, reg.Host, 2, func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			b.logf("  generated %s of %s", human(done), human(total))
		}
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("generating the workload: %w", err)
	}
	content := ""
	if w.ContentBytes != w.UniqueBytes {
		content = fmt.Sprintf(", %s uncompressed", human(w.ContentBytes))
	}
	b.logf("%s workload %s: %d images, %d blobs, %s unique%s (%s summed over images), %.0f%% random, generated in %.1fs",
		b.wl, human(size), len(w.Images), w.Blobs, human(w.UniqueBytes), content, human(w.ImageBytes),
		100*float64(w.RandomBytes)/float64(max(w.ContentBytes, 1)), time.Since(start).Seconds())
	chart := filepath.Join(dir, "chart")
	if err := w.WriteChart(chart); err != nil {
		return nil, nil, "", err
	}
	return reg, w, chart, nil
}

// measure runs spec and records the sample under step of the current workload.
func (b *Bench) measure(ctx context.Context, step string, spec cmdSpec) (Sample, error) {
	s, err := b.r.run(ctx, spec)
	if err != nil {
		return s, fmt.Errorf("%s: %w", step, err)
	}
	b.record(step, spec.String(), s)
	return s, nil
}

// record adds a sample under step of the current workload and logs it.
func (b *Bench) record(step, command string, s Sample) {
	id := b.id(step)
	m := b.res.measurement(id)
	m.Command = command
	m.Samples = append(m.Samples, s)
	extra := ""
	if s.Background >= 0.25 {
		extra = fmt.Sprintf(", other load %.1f cores", s.Background)
	}
	if s.Kernel >= 0.25 {
		extra += fmt.Sprintf(", kernel threads %.1f cores", s.Kernel)
	}
	rss := ""
	if s.MaxRSSKiB > 0 {
		rss = "  RSS " + human(s.MaxRSSKiB<<10)
	}
	b.logf("  %-28s %7.2fs%s%s", id, s.Wall, rss, extra)
}

// composite records the sum of parts (one sample per round) under step.
func (b *Bench) composite(step string, parts ...Sample) {
	id := b.id(step)
	var s Sample
	var bg, kt float64
	for _, p := range parts {
		kt += p.Kernel * p.Wall
		s.Wall += p.Wall
		s.User += p.User
		s.Sys += p.Sys
		s.RegistryCPU += p.RegistryCPU
		s.MaxRSSKiB = max(s.MaxRSSKiB, p.MaxRSSKiB)
		bg += p.Background * p.Wall
	}
	if s.Wall > 0 {
		s.Background, s.Kernel = bg/s.Wall, kt/s.Wall
	}
	m := b.res.measurement(id)
	m.Samples = append(m.Samples, s)
	b.logf("  %-28s %7.2fs", id, s.Wall)
}

func (b *Bench) mainSize(ctx context.Context) error {
	dir := b.dir("main")
	b.logf("generating the %s %s workload (seed %d)", human(b.cfg.Size), b.wl, b.cfg.Seed)
	src, w, chart, err := b.source(ctx, dir, b.cfg.Size)
	if err != nil {
		return err
	}
	b.cur.Main = summarize(w)
	var bundleDigests []string
	for round := 1; round <= b.cfg.Runs; round++ {
		b.logf("%s: round %d of %d", b.wl, round, b.cfg.Runs)
		rd := filepath.Join(dir, fmt.Sprintf("round-%d", round))
		if err := os.MkdirAll(rd, 0o755); err != nil {
			return err
		}
		p7First := round%2 == 1
		bundle := filepath.Join(rd, "p7", workload.ChartName+"-"+workload.ChartVersion+".tar.zst")

		// 1. Build.
		buildP7 := func() error {
			os.MkdirAll(filepath.Dir(bundle), 0o755)
			_, err := b.measure(ctx, "build.p7bundle", b.p7Build(chart, bundle, src.Host, filepath.Dir(bundle)))
			return err
		}
		layout := filepath.Join(rd, "script", "layout")
		scriptBundle := filepath.Join(rd, "script", "images.tar.zst")
		buildScript := func() error {
			os.MkdirAll(filepath.Dir(layout), 0o755)
			pull, err := b.measure(ctx, "build.script.pull", b.cranePull(w, src.Host, layout))
			if err != nil {
				return err
			}
			comp, err := b.measure(ctx, "build.script.tar-zstd", cmdSpec{Script: fmt.Sprintf(
				"tar -C %s -cf - . | zstd -T0 -3 -q -o %s", q(layout), q(scriptBundle))})
			if err != nil {
				return err
			}
			sum, err := b.measure(ctx, "build.script.sha256sum", cmdSpec{Script: fmt.Sprintf(
				"sha256sum %s > %s.sha256", q(scriptBundle), q(scriptBundle))})
			if err != nil {
				return err
			}
			b.composite("build.script", pull, comp, sum)
			return nil
		}
		builds := []func() error{buildP7, buildScript}
		haulDir := filepath.Join(rd, "hauler")
		if h := b.hauler; h != nil {
			builds = append(builds, func() error { return h.build(ctx, b, "build.hauler", w, src.Host, haulDir, nil) })
		}
		if err := rotate(round, builds); err != nil {
			return err
		}
		// The floor: zstd over the same bytes, already on disk as one tar.
		layoutTar := filepath.Join(rd, "script", "layout.tar")
		if _, err := b.r.run(ctx, cmdSpec{Script: fmt.Sprintf("tar -C %s -cf %s .", q(layout), q(layoutTar))}); err != nil {
			return err
		}
		os.RemoveAll(layout)
		os.Remove(scriptBundle)
		if _, err := b.measure(ctx, "build.floor.zstd", cmdSpec{Script: fmt.Sprintf(
			"zstd -T0 -3 -q -f %s -o %s.zst", q(layoutTar), q(layoutTar))}); err != nil {
			return err
		}
		os.RemoveAll(filepath.Join(rd, "script"))
		digest, err := fileDigest(bundle)
		if err != nil {
			return err
		}
		bundleDigests = append(bundleDigests, digest)
		if st, err := os.Stat(bundle); err == nil {
			b.cur.Main.BundleBytes = st.Size()
		}

		// 2+3. Install, re-install.
		installP7 := func() error { return b.installP7(ctx, rd, bundle, w, true) }
		extracted := filepath.Join(rd, "extracted")
		installScript := func() error { return b.installScript(ctx, rd, bundle, extracted, w) }
		installs := []func() error{installP7, installScript}
		if h := b.hauler; h != nil {
			installs = append(installs, func() error {
				reg, err := b.startRegistry(ctx, filepath.Join(rd, "site-hauler"))
				if err != nil {
					return err
				}
				defer b.stopRegistry(reg)
				if err := h.install(ctx, b, haulDir, reg.Host); err != nil {
					return err
				}
				// Hauler's copy drops the source host and, as docker does, puts
				// one-component names under library/.
				return checkSiteAt(ctx, reg, w, "library/", "hauler store copy")
			})
		}
		if err := rotate(round, installs); err != nil {
			return err
		}
		os.RemoveAll(haulDir)
		if err := b.ceiling(ctx, rd, extracted, w); err != nil {
			return err
		}
		os.RemoveAll(extracted)
		if _, err := b.measure(ctx, "install.floor.zstd-d", cmdSpec{Script: fmt.Sprintf("zstd -d -q -c %s > /dev/null", q(bundle))}); err != nil {
			return err
		}

		// 4. Verify.
		verifyP7 := func() error {
			_, err := b.measure(ctx, "verify.p7bundle", cmdSpec{Argv: []string{b.cfg.Bin, "verify", bundle, "--key", b.key + ".pub"}})
			return err
		}
		verifyScript := func() error {
			dg, err := b.measure(ctx, "verify.script.openssl", cmdSpec{Argv: []string{b.tools["openssl"], "dgst", "-sha256", bundle}})
			if err != nil {
				return err
			}
			cs, err := b.measure(ctx, "verify.script.cosign", cmdSpec{Argv: []string{b.tools["cosign"], "verify-blob",
				"--key", b.key + ".pub", "--signature", bundle + ".sig", "--insecure-ignore-tlog", bundle}})
			if err != nil {
				return err
			}
			b.composite("verify.script", dg, cs)
			return nil
		}
		if err := alternate(p7First, verifyP7, verifyScript); err != nil {
			return err
		}
		os.RemoveAll(rd)
	}
	b.check("bundle reproducible across rounds", allEqual(bundleDigests), strings.Join(unique(bundleDigests), ", "))
	if err := b.splitJoin(ctx, src, chart, bundleDigests[0]); err != nil {
		return err
	}
	if err := b.monthly(ctx, src, w, chart); err != nil {
		return err
	}
	b.stopRegistry(src)
	os.RemoveAll(dir)
	return nil
}

func alternate(firstA bool, a, c func() error) error {
	if !firstA {
		a, c = c, a
	}
	if err := a(); err != nil {
		return err
	}
	return c()
}

func (b *Bench) p7Build(chart, out, srcHost, dir string) cmdSpec {
	return cmdSpec{Dir: dir, Argv: []string{b.cfg.Bin, "build", "--chart", chart, "--key", b.key + ".key", "-o", out,
		"--mirror", workload.SourceHost + "=" + srcHost, "--plain-http"}}
}

func (b *Bench) cranePull(w *workload.Workload, srcHost, layout string) cmdSpec {
	argv := []string{b.tools["crane"], "pull", "--insecure", "--format", "oci", "--annotate-ref"}
	for _, img := range w.Images {
		argv = append(argv, srcHost+"/"+img.Name+":"+workload.AppVersion)
	}
	return cmdSpec{Argv: append(argv, layout)}
}

// pushResult is the part of `p7bundle push --json` (mirror.PushResult) the
// benchmark checks.
type pushResult struct {
	Images []struct {
		Source string `json:"source"`
	} `json:"images"`
	BlobsPushed  int64 `json:"blobsPushed"`
	BlobsSkipped int64 `json:"blobsSkipped"`
	BlobsMounted int64 `json:"blobsMounted"`
	BytesPushed  int64 `json:"bytesPushed"`
	// BytesRead are blob bytes read from the bundle (none on a re-install).
	BytesRead int64 `json:"bytesRead"`
	// Retried counts uploads tried again after a transient failure.
	Retried int64 `json:"retried"`
}

// workloadImages counts the pushed images of the workload: every bundle
// also carries p7bundle's site probe.
func (r *pushResult) workloadImages() int {
	n := 0
	for _, img := range r.Images {
		if !probeimage.IsProbe(img.Source) {
			n++
		}
	}
	return n
}

// p7Push runs `p7bundle push` with its default --jobs.
// p7Push measures one p7bundle push; with regStorage set, its disk use is
// watched too (the watcher walks the registry storage, which on 2 cores
// visibly slows a command that lasts a fifth of a second: a re-install).
func (b *Bench) p7Push(ctx context.Context, step, bundle, regHost, scratch, regStorage string) (*pushResult, error) {
	os.MkdirAll(scratch, 0o755)
	out := filepath.Join(b.cfg.Work, string(b.wl)+"-"+step+".json")
	spec := cmdSpec{
		Argv:   []string{b.cfg.Bin, "push", bundle, "--key", b.key + ".pub", "--registry", regHost, "--plain-http", "--json"},
		Dir:    scratch,
		Env:    []string{"TMPDIR=" + scratch},
		Stdout: out,
	}
	if regStorage != "" {
		spec.Watch = &diskWatch{Scratch: scratch, Registry: regStorage}
	}
	_, err := b.measure(ctx, step, spec)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var pr pushResult
	if err := json.Unmarshal(raw, &pr); err != nil {
		return nil, fmt.Errorf("%s: parsing --json output: %w", step, err)
	}
	return &pr, nil
}

func (b *Bench) installP7(ctx context.Context, rd, bundle string, w *workload.Workload, reinstall bool) error {
	reg, err := b.startRegistry(ctx, filepath.Join(rd, "site-p7"))
	if err != nil {
		return err
	}
	defer b.stopRegistry(reg)
	first, err := b.p7Push(ctx, "install.p7bundle", bundle, reg.Host, filepath.Join(rd, "scratch"), reg.Dir)
	if err != nil {
		return err
	}
	if err := b.checkSite(ctx, reg, w, "p7bundle push"); err != nil {
		return err
	}
	b.check("p7bundle push uploads every blob into an empty registry", first.BlobsPushed > 0 && first.workloadImages() == len(w.Images),
		fmt.Sprintf("%d images, %d blobs pushed, %d mounted, %s pushed, %s read from the bundle, %d upload(s) retried",
			len(first.Images), first.BlobsPushed, first.BlobsMounted, human(first.BytesPushed), human(first.BytesRead), first.Retried))
	if first.Retried > 0 {
		b.logf("  note: p7bundle push retried %d upload(s) after transient failures", first.Retried)
	}
	if !reinstall {
		return nil
	}
	again, err := b.p7Push(ctx, "reinstall.p7bundle", bundle, reg.Host, filepath.Join(rd, "scratch"), "")
	if err != nil {
		return err
	}
	b.check("re-install uploads nothing", again.BlobsPushed == 0 && again.BytesPushed == 0,
		fmt.Sprintf("%d blobs pushed, %d skipped, %s pushed, %s read from the bundle", again.BlobsPushed, again.BlobsSkipped, human(again.BytesPushed), human(again.BytesRead)))
	return nil
}

// checkSite insists every image arrived with its tag.
func (b *Bench) checkSite(ctx context.Context, reg *testregistry.Registry, w *workload.Workload, who string) error {
	return checkSiteAt(ctx, reg, w, "pseven/", who)
}

// checkSiteAt checks every image of w is in reg under prefix, with its one tag.
func checkSiteAt(ctx context.Context, reg *testregistry.Registry, w *workload.Workload, prefix, who string) error {
	for _, img := range w.Images {
		tags, err := reg.Tags(ctx, prefix+img.Name)
		if err != nil {
			return fmt.Errorf("after %s: %w", who, err)
		}
		if len(tags) != 1 || tags[0] != workload.AppVersion {
			return fmt.Errorf("after %s: %s%s has tags %v, want [%s]", who, prefix, img.Name, tags, workload.AppVersion)
		}
	}
	return nil
}

// orasScript is what an admin would run per image after extracting the bundle.
func (b *Bench) orasLines(w *workload.Workload, layout, regHost string) []string {
	var lines []string
	for _, img := range w.Images {
		lines = append(lines, fmt.Sprintf("%s cp --from-oci-layout %s@%s %s/pseven/%s:%s --to-plain-http",
			q(b.tools["oras"]), q(layout), img.Digest, regHost, img.Name, workload.AppVersion))
	}
	return lines
}

func (b *Bench) installScript(ctx context.Context, rd, bundle, extracted string, w *workload.Workload) error {
	reg, err := b.startRegistry(ctx, filepath.Join(rd, "site-script"))
	if err != nil {
		return err
	}
	defer b.stopRegistry(reg)
	os.RemoveAll(extracted)
	os.MkdirAll(extracted, 0o755)
	ex, err := b.measure(ctx, "install.script.extract", cmdSpec{Script: fmt.Sprintf("zstd -d -q -c %s | tar -x -C %s", q(bundle), q(extracted))})
	if err != nil {
		return err
	}
	b.cur.Main.ExtractedBytes = dirSize(extracted)
	lines := b.orasLines(w, filepath.Join(extracted, "oci"), reg.Host)
	script := filepath.Join(rd, "oras-push.sh")
	if err := os.WriteFile(script, []byte("set -euo pipefail\n"+strings.Join(lines, " >/dev/null\n")+" >/dev/null\n"), 0o644); err != nil {
		return err
	}
	push, err := b.measure(ctx, "install.script.oras", cmdSpec{Argv: []string{"bash", script}})
	b.res.measurement(b.id("install.script.oras")).Command = fmt.Sprintf("bash oras-push.sh, 30 lines like: %s", lines[0])
	if err != nil {
		return err
	}
	b.composite("install.script", ex, push)
	return b.checkSite(ctx, reg, w, "oras cp")
}

// ceiling pushes the extracted layout into a fresh registry with a minimal
// client: every distinct blob streamed from its file once, four at a time,
// nothing hashed on the client. That is what the registry itself ingests.
func (b *Bench) ceiling(ctx context.Context, rd, extracted string, w *workload.Workload) error {
	reg, err := b.startRegistry(ctx, filepath.Join(rd, "site-ceiling"))
	if err != nil {
		return err
	}
	defer b.stopRegistry(reg)
	s, err := b.r.runFunc(func() error {
		return workload.Ingest(ctx, reg.Host, filepath.Join(extracted, "oci"), "pseven", w, 4)
	})
	if err != nil {
		return fmt.Errorf("install.ceiling.raw-x4: %w", err)
	}
	b.record("install.ceiling.raw-x4", "(in-process) workload.Ingest: HTTP blob uploads from the extracted layout, 4 at a time, then mounts, manifests, tags", s)
	return b.checkSite(ctx, reg, w, "raw ingest")
}

// secondSize builds, pushes and verifies once at the second size, for peak RSS.
func (b *Bench) secondSize(ctx context.Context) error {
	dir := b.dir("second")
	b.logf("generating the %s %s workload for the peak-RSS runs", human(b.cfg.RSSSize), b.wl)
	src, w, chart, err := b.source(ctx, dir, b.cfg.RSSSize)
	if err != nil {
		return err
	}
	b.cur.Second = summarize(w)
	bundle := filepath.Join(dir, "p7", workload.ChartName+"-"+workload.ChartVersion+".tar.zst")
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	if _, err := b.measure(ctx, "second.build.p7bundle", b.p7Build(chart, bundle, src.Host, filepath.Dir(bundle))); err != nil {
		return err
	}
	if st, err := os.Stat(bundle); err == nil {
		b.cur.Second.BundleBytes = st.Size()
	}
	b.stopRegistry(src) // free its disk before the push
	reg, err := b.startRegistry(ctx, filepath.Join(dir, "site"))
	if err != nil {
		return err
	}
	pr, err := b.p7Push(ctx, "second.install.p7bundle", bundle, reg.Host, filepath.Join(dir, "scratch"), reg.Dir)
	if err != nil {
		return err
	}
	if err := b.checkSite(ctx, reg, w, "p7bundle push"); err != nil {
		return err
	}
	b.check(fmt.Sprintf("p7bundle push at %s uploads every image", human(b.cfg.RSSSize)), pr.workloadImages() == len(w.Images),
		fmt.Sprintf("%d images, %d blobs, %s", len(pr.Images), pr.BlobsPushed, human(pr.BytesPushed)))
	b.stopRegistry(reg)
	if _, err := b.measure(ctx, "second.verify.p7bundle", cmdSpec{Argv: []string{b.cfg.Bin, "verify", bundle, "--key", b.key + ".pub"}}); err != nil {
		return err
	}
	os.RemoveAll(dir)
	return nil
}

// monthlyChange is the share of the bytes next month's release changes.
const monthlyChange = 0.10

// monthly is the operation admins run most: next month's release over a
// site holding this one, as a full bundle and as a differential one.
func (b *Bench) monthly(ctx context.Context, src *testregistry.Registry, w *workload.Workload, chart string) error {
	dir := b.dir("monthly")
	name := workload.ChartName + "-" + workload.ChartVersion + ".tar.zst"
	v1 := filepath.Join(dir, "v1", name)
	os.MkdirAll(filepath.Dir(v1), 0o755)
	if _, err := b.r.run(ctx, b.p7Build(chart, v1, src.Host, filepath.Dir(v1))); err != nil {
		return err
	}
	next := w.NextMonth(monthlyChange)
	if err := next.Generate(ctx, src.Host, 2, nil); err != nil {
		return fmt.Errorf("generating next month's release: %w", err)
	}
	chart2 := filepath.Join(dir, "chart-next")
	if err := next.WriteChart(chart2); err != nil {
		return err
	}
	b.logf("%s monthly: next release changes %s of %s (%.0f%%) in %d layers", b.wl, human(next.ChangedBytes), human(w.UniqueBytes),
		100*float64(next.ChangedBytes)/float64(w.UniqueBytes), strings.Count(strings.Join(layerIDs(next), " "), "-next"))
	name2 := workload.ChartName + "-" + workload.NextChartVersion + ".tar.zst"
	full := filepath.Join(dir, "full", name2)
	delta := filepath.Join(dir, "delta", name2)
	for _, x := range []struct{ id, out string }{{"monthly.build.full", full}, {"monthly.build.delta", delta}} {
		os.MkdirAll(filepath.Dir(x.out), 0o755)
		spec := b.p7Build(chart2, x.out, src.Host, filepath.Dir(x.out))
		if x.out == delta {
			spec.Argv = append(spec.Argv, "--base", v1)
		}
		if _, err := b.measure(ctx, x.id, spec); err != nil {
			return err
		}
	}
	diffOut := filepath.Join(dir, "diff.json")
	if _, err := b.r.run(ctx, cmdSpec{Argv: []string{b.cfg.Bin, "diff", v1, full, "--json"}, Stdout: diffOut}); err != nil {
		return err
	}
	var d struct {
		Changed  []json.RawMessage `json:"changed"`
		NewBytes int64             `json:"newBytes"`
	}
	if raw, err := os.ReadFile(diffOut); err != nil {
		return err
	} else if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("monthly: parsing diff --json: %w", err)
	}
	m := &MonthlySummary{ChangedBytes: d.NewBytes, ChangedImages: len(d.Changed)}
	if st, err := os.Stat(full); err == nil {
		m.FullBundleBytes = st.Size()
	}
	if st, err := os.Stat(delta); err == nil {
		m.DeltaBundleBytes = st.Size()
	}
	b.cur.Monthly = m
	// Each install into its own site registry that holds this month's release.
	for _, x := range []struct{ id, bundle string }{{"monthly.install.full", full}, {"monthly.install.delta", delta}} {
		reg, err := b.startRegistry(ctx, filepath.Join(dir, "site-"+filepath.Base(filepath.Dir(x.bundle))))
		if err != nil {
			return err
		}
		if _, err := b.r.run(ctx, cmdSpec{Argv: []string{b.cfg.Bin, "push", v1, "--key", b.key + ".pub", "--registry", reg.Host, "--plain-http"}}); err != nil {
			return err
		}
		if _, err := b.p7Push(ctx, x.id, x.bundle, reg.Host, filepath.Join(dir, "scratch"), reg.Dir); err != nil {
			return err
		}
		for _, img := range next.Images {
			tags, err := reg.Tags(ctx, "pseven/"+img.Name)
			if err != nil || !slices.Contains(tags, workload.NextAppVersion) {
				return fmt.Errorf("after %s: pseven/%s has tags %v (%v), want %s among them", x.id, img.Name, tags, err, workload.NextAppVersion)
			}
		}
		b.stopRegistry(reg)
	}
	b.check("monthly: full and differential bundles install every image of next month's release", true,
		fmt.Sprintf("%d images, %d changed", len(next.Images), m.ChangedImages))
	os.RemoveAll(dir)
	return nil
}

// minSplitSize is the smallest --split-size p7bundle accepts (8 MiB).
const minSplitSize = 8 << 20

// splitJoin builds the bundle again as parts of a quarter of its size (at
// least 8 MiB), joins them with `p7bundle join` and insists the result is
// the unsplit bundle (sha256 want), byte for byte. For reference, the
// join by hand: cat of the parts, then sha256sum.
func (b *Bench) splitJoin(ctx context.Context, src *testregistry.Registry, chart, want string) error {
	dir := b.dir("split")
	name := workload.ChartName + "-" + workload.ChartVersion + ".tar.zst"
	out := filepath.Join(dir, "parts", name)
	os.MkdirAll(filepath.Dir(out), 0o755)
	split := max(minSplitSize, (b.cur.Main.BundleBytes/4+1<<20-1)/(1<<20)*(1<<20))
	spec := b.p7Build(chart, out, src.Host, filepath.Dir(out))
	spec.Argv = append(spec.Argv, "--split-size", strconv.FormatInt(split, 10))
	if _, err := b.measure(ctx, "split.build.p7bundle", spec); err != nil {
		return err
	}
	var parts struct {
		Size   int64  `json:"size"`
		Digest string `json:"digest"`
		Parts  []struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
		} `json:"parts"`
	}
	raw, err := os.ReadFile(out + ".parts.json")
	if err == nil {
		err = json.Unmarshal(raw, &parts)
	}
	if err != nil {
		return fmt.Errorf("split build: reading its parts list: %w", err)
	}
	sum := &SplitSummary{SplitSize: split, Parts: len(parts.Parts), Bytes: parts.Size}
	var files []string
	for _, p := range parts.Parts {
		sum.LargestPart = max(sum.LargestPart, p.Size)
		files = append(files, q(filepath.Join(filepath.Dir(out), p.Name)))
	}
	joined := filepath.Join(dir, "joined", name)
	os.MkdirAll(filepath.Dir(joined), 0o755)
	if _, err := b.measure(ctx, "split.join.p7bundle", cmdSpec{Dir: dir,
		Argv: []string{b.cfg.Bin, "join", out + ".001", "-o", joined}}); err != nil {
		return err
	}
	if sum.JoinedDigest, err = sha256File(joined); err != nil {
		return err
	}
	os.Remove(joined)
	byHand := filepath.Join(dir, "cat", name)
	os.MkdirAll(filepath.Dir(byHand), 0o755)
	if _, err := b.measure(ctx, "split.join.script", cmdSpec{Script: fmt.Sprintf("cat %s > %s && sha256sum %s > /dev/null",
		strings.Join(files, " "), q(byHand), q(byHand))}); err != nil {
		return err
	}
	os.RemoveAll(dir)
	sum.Identical = sum.JoinedDigest == want && parts.Digest == want
	b.cur.Split = sum
	ok := sum.Identical && (sum.Parts >= 2 || b.cur.Main.BundleBytes <= split)
	b.check("split: p7bundle join of the parts is the unsplit bundle, byte for byte", ok,
		fmt.Sprintf("--split-size %s: %d parts, largest %s; joined %s, parts.json %s, unsplit %s",
			human(split), sum.Parts, human(sum.LargestPart), sum.JoinedDigest, parts.Digest, want))
	return nil
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func layerIDs(w *workload.Workload) []string {
	var ids []string
	for _, l := range w.Layers {
		ids = append(ids, l.ID)
	}
	return ids
}

func fileDigest(path string) (string, error) {
	b, err := os.ReadFile(path + ".sha256")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", fmt.Errorf("%s.sha256 is empty", path)
	}
	return "sha256:" + f[0], nil
}

func allEqual(s []string) bool {
	for _, x := range s {
		if x != s[0] {
			return false
		}
	}
	return len(s) > 0
}

func unique(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// q quotes a path for bash.
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
