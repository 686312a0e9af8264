package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/internal/humanize"
)

// Result is everything a run measured; latest.json is its JSON form.
type Result struct {
	Generated      string            `json:"generated"`
	Command        string            `json:"command"`
	WorkDir        string            `json:"workDir"` // shown as $WORK in commands
	Dir            string            `json:"dir"`     // the working directory, shown as .
	Size           int64             `json:"sizeBytes"`
	SecondSize     int64             `json:"secondSizeBytes,omitempty"`
	Runs           int               `json:"runs"`
	Seed           uint64            `json:"seed"`
	ElapsedSeconds float64           `json:"elapsedSeconds"`
	Machine        Machine           `json:"machine"`
	Tools          map[string]string `json:"tools"`
	Workload       *WorkloadSummary  `json:"workload"`
	SecondWorkload *WorkloadSummary  `json:"secondWorkload,omitempty"`
	Monthly        *MonthlySummary   `json:"monthly,omitempty"`
	Measurements   []*Measurement    `json:"measurements"`
	Pairs          []Pair            `json:"pairs"`
	Targets        []Target          `json:"targets"`
	Checks         []Check           `json:"checks"`
	Noise          Noise             `json:"noise"`
}

// MonthlySummary is the monthly scenario: next month's release over this one.
type MonthlySummary struct {
	ChangedImages int `json:"changedImages"`
	// ChangedBytes are the blob bytes of next month's release this one lacks.
	ChangedBytes     int64 `json:"changedBytes"`
	FullBundleBytes  int64 `json:"fullBundleBytes"`
	DeltaBundleBytes int64 `json:"deltaBundleBytes"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU        string    `json:"cpu"`
	Cores      int       `json:"cores"`
	MemBytes   int64     `json:"memBytes"`
	Kernel     string    `json:"kernel"`
	SHANI      bool      `json:"shaNI"`
	GoVersion  string    `json:"goVersion"`
	LoadBefore []float64 `json:"loadAvgBefore"`
	LoadAfter  []float64 `json:"loadAvgAfter"`
	Filesystem string    `json:"scratchFilesystem"`
}

// WorkloadSummary is the generated image set.
type WorkloadSummary struct {
	Images         int     `json:"images"`
	Blobs          int     `json:"blobs"`
	UniqueBytes    int64   `json:"uniqueBytes"`
	ImageBytes     int64   `json:"imageBytes"`
	RandomFraction float64 `json:"randomFraction"`
	BundleBytes    int64   `json:"bundleBytes"`
	ExtractedBytes int64   `json:"extractedBytes,omitempty"`
	Largest        []struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	} `json:"largest"`
	SmallestImage int64 `json:"smallestImageBytes"`
	MedianImage   int64 `json:"medianImageBytes"`
}

// Measurement is every sample of one command (one per round).
type Measurement struct {
	ID         string   `json:"id"`
	Command    string   `json:"command,omitempty"`
	Samples    []Sample `json:"samples"`
	Median     float64  `json:"medianSeconds"`
	Min        float64  `json:"minSeconds"`
	Max        float64  `json:"maxSeconds"`
	CV         float64  `json:"cv"`
	MaxRSSKiB  int64    `json:"maxRSSKiB"`
	Background float64  `json:"medianBackgroundCores"`
}

// Pair compares p7bundle with its alternative.
type Pair struct {
	Name      string  `json:"name"`
	P7        string  `json:"p7bundle"`
	Baseline  string  `json:"baseline"`
	Ratio     float64 `json:"ratio"` // median / median
	RatioMin  float64 `json:"ratioMin"`
	RatioMax  float64 `json:"ratioMax"`
	Target    float64 `json:"target,omitempty"` // ratio must be <= Target
	Reference bool    `json:"reference,omitempty"`
}

// Target is one goal from issue 6, met or missed.
type Target struct {
	Name   string `json:"name"`
	Goal   string `json:"goal"`
	Actual string `json:"actual"`
	Met    bool   `json:"met"`
}

// Check is a correctness check made along the way.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Noise summarizes how busy the machine was with other work.
type Noise struct {
	MedianBackgroundCores float64 `json:"medianBackgroundCores"`
	MaxBackgroundCores    float64 `json:"maxBackgroundCores"`
	MedianCV              float64 `json:"medianCV"`
}

func newResult(cfg Config) *Result {
	return &Result{
		Generated: time.Now().UTC().Format(time.RFC3339),
		Command:   strings.Join(append([]string{"p7bench"}, os.Args[1:]...), " "),
		Size:      cfg.Size, SecondSize: cfg.RSSSize, Runs: cfg.Runs, Seed: cfg.Seed,
	}
}

func (r *Result) measurement(id string) *Measurement {
	for _, m := range r.Measurements {
		if m.ID == id {
			return m
		}
	}
	m := &Measurement{ID: id}
	r.Measurements = append(r.Measurements, m)
	return m
}

func (r *Result) get(id string) *Measurement {
	for _, m := range r.Measurements {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func (r *Result) check(name string, ok bool, detail string) {
	for i, c := range r.Checks {
		if c.Name == name { // one entry per check: the last detail, failed if any round failed
			r.Checks[i].OK = c.OK && ok
			if !ok || c.OK {
				r.Checks[i].Detail = detail
			}
			return
		}
	}
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: detail})
}

func summarize(w *workload.Workload) *WorkloadSummary {
	s := &WorkloadSummary{Images: len(w.Images), Blobs: w.Blobs, UniqueBytes: w.UniqueBytes, ImageBytes: w.ImageBytes}
	if w.UniqueBytes > 0 {
		s.RandomFraction = float64(w.RandomBytes) / float64(w.UniqueBytes)
	}
	imgs := append([]*workload.Image(nil), w.Images...)
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Size > imgs[j].Size })
	for _, img := range imgs[:min(3, len(imgs))] {
		s.Largest = append(s.Largest, struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
		}{img.Name, img.Size})
	}
	if len(imgs) > 0 {
		s.SmallestImage = imgs[len(imgs)-1].Size
		s.MedianImage = imgs[len(imgs)/2].Size
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (m *Measurement) walls() []float64 {
	var out []float64
	for _, s := range m.Samples {
		out = append(out, s.Wall)
	}
	return out
}

// finish computes statistics, pairs and targets.
func (r *Result) finish(elapsed time.Duration) {
	r.ElapsedSeconds = elapsed.Seconds()
	var bgs, cvs []float64
	for _, m := range r.Measurements {
		w := m.walls()
		m.Median = median(w)
		m.Min, m.Max = slicesMin(w), slicesMax(w)
		var mean, ss float64
		for _, x := range w {
			mean += x
		}
		mean /= float64(len(w))
		for _, x := range w {
			ss += (x - mean) * (x - mean)
		}
		if len(w) > 1 && mean > 0 {
			m.CV = math.Sqrt(ss/float64(len(w)-1)) / mean
			cvs = append(cvs, m.CV)
		}
		var bg []float64
		for _, s := range m.Samples {
			m.MaxRSSKiB = max(m.MaxRSSKiB, s.MaxRSSKiB)
			bg = append(bg, s.Background)
			bgs = append(bgs, s.Background)
			r.Noise.MaxBackgroundCores = max(r.Noise.MaxBackgroundCores, s.Background)
		}
		m.Background = median(bg)
	}
	if len(bgs) > 0 {
		r.Noise.MedianBackgroundCores = median(bgs)
	}
	if len(cvs) > 0 {
		r.Noise.MedianCV = median(cvs)
	}

	pair := func(name, p7, base string, target float64, reference bool) *Pair {
		a, b := r.get(p7), r.get(base)
		if a == nil || b == nil {
			return nil
		}
		p := Pair{Name: name, P7: p7, Baseline: base, Ratio: a.Median / b.Median, Target: target, Reference: reference}
		p.RatioMin, p.RatioMax = math.Inf(1), math.Inf(-1)
		for i := range min(len(a.Samples), len(b.Samples)) {
			x := a.Samples[i].Wall / b.Samples[i].Wall
			p.RatioMin, p.RatioMax = min(p.RatioMin, x), max(p.RatioMax, x)
		}
		r.Pairs = append(r.Pairs, p)
		return &r.Pairs[len(r.Pairs)-1]
	}
	ratioTarget := func(name, goal string, p *Pair) {
		if p == nil {
			return
		}
		r.Targets = append(r.Targets, Target{Name: name, Goal: goal,
			Actual: fmt.Sprintf("%.2f× (rounds %.2f–%.2f)", p.Ratio, p.RatioMin, p.RatioMax), Met: p.Ratio <= p.Target})
	}
	ratioTarget("build", "≤ 0.60× crane pull + tar | zstd -T0 -3 + sha256sum",
		pair("build", "build.p7bundle", "build.script", 0.6, false))
	pair("build vs zstd floor", "build.p7bundle", "build.floor.zstd", 0, true)
	ratioTarget("install", "≤ 0.60× zstd -d | tar -x + oras cp",
		pair("install", "install.p7bundle", "install.script", 0.6, false))
	pair("install vs registry ingest ceiling", "install.p7bundle", "install.ceiling.raw-x4", 0, true)
	pair("install vs zstd -d floor", "install.p7bundle", "install.floor.zstd-d", 0, true)
	ratioTarget("re-install", "≤ 0.05× first install",
		pair("re-install vs first install", "reinstall.p7bundle", "install.p7bundle", 0.05, false))
	ratioTarget("verify", "≤ 1.50× openssl dgst -sha256",
		pair("verify vs openssl dgst", "verify.p7bundle", "verify.script.openssl", 1.5, false))
	pair("verify vs openssl dgst + cosign verify-blob", "verify.p7bundle", "verify.script", 0, true)

	if mo := r.Monthly; mo != nil {
		r.Targets = append(r.Targets, Target{Name: "differential bundle size", Goal: "≤ 1.02× the changed bytes",
			Actual: fmt.Sprintf("%s for %s changed (%.2f×); the full bundle is %s", human(mo.DeltaBundleBytes), human(mo.ChangedBytes),
				float64(mo.DeltaBundleBytes)/float64(max(mo.ChangedBytes, 1)), human(mo.FullBundleBytes)),
			Met: float64(mo.DeltaBundleBytes) <= 1.02*float64(mo.ChangedBytes)})
		ratioTarget("differential install", "≤ 0.15× the full bundle's install over the same site",
			pair("monthly install: differential vs full bundle", "monthly.install.delta", "monthly.install.full", 0.15, false))
		pair("monthly build: differential vs full bundle", "monthly.build.delta", "monthly.build.full", 0, true)
	}

	const rssLimit = 256 << 10 // KiB
	var rssParts []string
	rssMax := int64(0)
	for _, id := range []string{"build.p7bundle", "install.p7bundle", "second.build.p7bundle", "second.install.p7bundle"} {
		if m := r.get(id); m != nil {
			rssParts = append(rssParts, fmt.Sprintf("%s %s", id, human(m.MaxRSSKiB<<10)))
			rssMax = max(rssMax, m.MaxRSSKiB)
		}
	}
	if len(rssParts) > 0 {
		r.Targets = append(r.Targets, Target{Name: "peak RSS", Goal: "≤ 256 MiB for build and install at both sizes",
			Actual: strings.Join(rssParts, "; "), Met: rssMax <= rssLimit})
	}
	var open, scratch, fsys int64
	samples := 0
	for _, id := range []string{"install.p7bundle", "reinstall.p7bundle", "second.install.p7bundle"} {
		if m := r.get(id); m != nil {
			for _, s := range m.Samples {
				if s.Disk != nil {
					open, scratch, fsys = max(open, s.Disk.OpenForWriteMax), max(scratch, s.Disk.ScratchMax), max(fsys, s.Disk.FilesystemMax)
					samples += s.Disk.Samples
				}
			}
		}
	}
	if samples > 0 {
		actual := fmt.Sprintf("files open for writing %s, scratch dir %s (%d samples); free-space drop beyond the registry %s (shared disk, noisy)",
			human(open), human(scratch), samples, human(fsys))
		if r.Workload != nil && r.Workload.ExtractedBytes > 0 {
			actual += fmt.Sprintf("; the scripted install extracts %s", human(r.Workload.ExtractedBytes))
		}
		r.Targets = append(r.Targets, Target{Name: "extra disk during install", Goal: "0 beyond the bundle",
			Actual: actual, Met: open == 0 && scratch == 0})
	}
}

func slicesMin(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func slicesMax(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// labels name measurements in the report.
var labels = map[string]string{
	"build.p7bundle":          "p7bundle build",
	"build.script":            "script: crane pull + tar | zstd + sha256sum",
	"build.script.pull":       "  crane pull --format oci (30 images)",
	"build.script.tar-zstd":   "  tar -c | zstd -T0 -3",
	"build.script.sha256sum":  "  sha256sum",
	"build.floor.zstd":        "floor: zstd -T0 -3 of the tar on disk",
	"install.p7bundle":        "p7bundle push (empty registry)",
	"reinstall.p7bundle":      "p7bundle push (registry has everything)",
	"install.script":          "script: zstd -d | tar -x + oras cp",
	"install.script.extract":  "  zstd -d | tar -x",
	"install.script.oras":     "  oras cp --from-oci-layout ×30, one at a time",
	"install.ceiling.raw-x4":  "ceiling: raw blob uploads, 4 at a time, from disk",
	"install.floor.zstd-d":    "floor: zstd -d > /dev/null",
	"verify.p7bundle":         "p7bundle verify",
	"verify.script":           "script: openssl dgst + cosign verify-blob",
	"verify.script.openssl":   "  openssl dgst -sha256",
	"verify.script.cosign":    "  cosign verify-blob",
	"second.build.p7bundle":   "p7bundle build",
	"second.install.p7bundle": "p7bundle push (empty registry)",
	"second.verify.p7bundle":  "p7bundle verify",
}

func (r *Result) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	md := r.markdown()
	if _, err := os.Stat(filepath.Join(dir, "analysis.md")); err == nil {
		md = strings.Replace(md, "\n## Targets", "\nWhy targets are missed, from profiles: [analysis.md](analysis.md) (hand-written; check its date and version against this run).\n\n## Targets", 1)
	}
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md), 0o644)
}

func (r *Result) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# p7bundle benchmark: latest results\n\n")
	p("Generated %s by `make bench` (`%s`) in %.1f min: BENCH_SIZE=%s, seed %d, %d rounds; "+
		"within a round the two sides of each pair run back to back, their order alternating between rounds. "+
		"Times are wall-clock seconds: the median, then min–max over the rounds. Ratios are p7bundle's median over the other side's median "+
		"(min–max of the per-round ratios in brackets). See [bench/README.md](../README.md) for the method.\n\n",
		r.Generated, r.Command, r.ElapsedSeconds/60, sizeLabel(r.Size), r.Seed, r.Runs)

	p("## Targets (issue 6)\n\n| target | goal | measured | |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		v := "**met**"
		if !t.Met {
			v = "**missed**"
		}
		p("| %s | %s | %s | %s |\n", t.Name, cell(t.Goal), cell(t.Actual), v)
	}
	p("\n## Pairs\n\n| pair | p7bundle | other side | ratio |\n|---|---|---|---|\n")
	for _, pr := range r.Pairs {
		a, c := r.get(pr.P7), r.get(pr.Baseline)
		p("| %s | %s | %s: %s | **%.2f×** (%.2f–%.2f) |\n", pr.Name, span(a), cell(strings.TrimSpace(label(c.ID))), span(c), pr.Ratio, pr.RatioMin, pr.RatioMax)
	}
	if w := r.Workload; w != nil {
		p("\n## Every measurement at %s\n\n", sizeLabel(r.Size))
		p("| step | median s | min–max s | CV | throughput | peak RSS | CPU user+sys s | registry CPU s | other load / kernel threads (cores) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range r.Measurements {
			if strings.HasPrefix(m.ID, "second.") {
				continue
			}
			r.row(&b, m, w)
		}
	}
	if w := r.SecondWorkload; w != nil {
		p("\n## Second size: %s (one run each, for peak RSS and scaling)\n\n", sizeLabel(r.SecondSize))
		p("| step | s | throughput | peak RSS | CPU user+sys s | registry CPU s | other load / kernel threads (cores) |\n|---|---|---|---|---|---|---|\n")
		for _, m := range r.Measurements {
			if !strings.HasPrefix(m.ID, "second.") {
				continue
			}
			s := m.Samples[0]
			p("| %s | %.2f | %s | %s | %.1f | %.1f | %.2f / %.2f |\n", cell(label(m.ID)), s.Wall, throughput(m, w), human(s.MaxRSSKiB<<10),
				s.User+s.Sys, s.RegistryCPU, s.Background, s.Kernel)
		}
		if a, c := r.get("build.p7bundle"), r.get("second.build.p7bundle"); a != nil && c != nil {
			p("\nPeak RSS, %s → %s: build %s → %s, push %s → %s.\n", sizeLabel(r.Size), sizeLabel(r.SecondSize),
				human(a.MaxRSSKiB<<10), human(c.MaxRSSKiB<<10), human(rss(r.get("install.p7bundle"))<<10), human(rss(r.get("second.install.p7bundle"))<<10))
		}
	}
	p("\n## Workload\n\n")
	for _, x := range []struct {
		size int64
		w    *WorkloadSummary
	}{{r.Size, r.Workload}, {r.SecondSize, r.SecondWorkload}} {
		if x.w == nil {
			continue
		}
		w := x.w
		var big []string
		for _, l := range w.Largest {
			big = append(big, fmt.Sprintf("%s %s", l.Name, human(l.Size)))
		}
		p("- **%s**: %d images (one tag, %s), %d blobs, %s unique (%s summed over images: base layers are shared), "+
			"%.0f%% random bytes, the rest text-like; uncompressed tar layers. Largest: %s; median image %s, smallest %s. "+
			"Bundle %s (%.0f%% of the blobs).\n",
			sizeLabel(x.size), w.Images, workload.AppVersion, w.Blobs, human(w.UniqueBytes), human(w.ImageBytes), 100*w.RandomFraction,
			strings.Join(big, ", "), human(w.MedianImage), human(w.SmallestImage), human(w.BundleBytes),
			100*float64(w.BundleBytes)/float64(max(w.UniqueBytes, 1)))
	}
	if mo := r.Monthly; mo != nil {
		p("- **monthly scenario** (at %s): next month's release (%s, %d of the images changed, the others re-tagged; %s of new blobs, about %.0f%% of the bytes): "+
			"full bundle %s, differential bundle (`build --base`) %s; each installed over a site registry holding this month's release.\n",
			sizeLabel(r.Size), workload.NextAppVersion, mo.ChangedImages, human(mo.ChangedBytes), 100*monthlyChange, human(mo.FullBundleBytes), human(mo.DeltaBundleBytes))
	}
	p("\n## Checks\n\n")
	for _, c := range r.Checks {
		v := "ok"
		if !c.OK {
			v = "FAILED"
		}
		p("- %s: **%s** (%s)\n", c.Name, v, c.Detail)
	}
	m := r.Machine
	p("\n## Machine and tools\n\n")
	p("- %s, %d cores, %s RAM, Linux %s, SHA-NI %v; scratch on %s\n", m.CPU, m.Cores, human(m.MemBytes), m.Kernel, m.SHANI, m.Filesystem)
	p("- load average before %v, after %v; other processes kept a median %.2f cores busy during a measurement (max %.2f); median CV of the timings %.1f%%\n",
		m.LoadBefore, m.LoadAfter, r.Noise.MedianBackgroundCores, r.Noise.MaxBackgroundCores, 100*r.Noise.MedianCV)
	var names []string
	for k := range r.Tools {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p("- %s: %s\n", k, r.Tools[k])
	}
	p("\n## Commands\n\n")
	for _, m := range r.Measurements {
		if m.Command != "" && !strings.HasPrefix(m.ID, "second.") {
			c := m.Command
			if r.WorkDir != "" {
				c = strings.ReplaceAll(c, r.WorkDir, "$WORK")
			}
			if r.Dir != "" {
				c = strings.ReplaceAll(c, r.Dir+"/", "")
			}
			p("- %s: `%s`\n", m.ID, abbreviate(c))
		}
	}
	return b.String()
}

func (r *Result) row(b *strings.Builder, m *Measurement, w *WorkloadSummary) {
	var cpu, reg float64
	var kt []float64
	for _, s := range m.Samples {
		cpu += s.User + s.Sys
		reg += s.RegistryCPU
		kt = append(kt, s.Kernel)
	}
	n := float64(len(m.Samples))
	rss := "–"
	if m.MaxRSSKiB > 0 {
		rss = human(m.MaxRSSKiB << 10)
	}
	fmt.Fprintf(b, "| %s | %.2f | %.2f–%.2f | %.0f%% | %s | %s | %.1f | %.1f | %.2f / %.2f |\n", cell(label(m.ID)), m.Median, m.Min, m.Max,
		100*m.CV, throughput(m, w), rss, cpu/n, reg/n, m.Background, median(kt))
}

func rss(m *Measurement) int64 {
	if m == nil {
		return 0
	}
	return m.MaxRSSKiB
}

// throughput is workload bytes per second, or bundle bytes for steps that
// only read the bundle.
func throughput(m *Measurement, w *WorkloadSummary) string {
	med := m.Median
	if med == 0 || math.IsNaN(med) {
		med = m.Samples[0].Wall
	}
	bytes := w.UniqueBytes
	what := ""
	switch {
	case strings.Contains(m.ID, "verify"), strings.Contains(m.ID, "zstd-d"), strings.HasSuffix(m.ID, "sha256sum"):
		bytes, what = w.BundleBytes, " (bundle)"
	case strings.HasPrefix(m.ID, "reinstall"), strings.HasPrefix(m.ID, "monthly."):
		return "–"
	}
	return fmt.Sprintf("%.0f MB/s%s", float64(bytes)/med/1e6, what)
}

func span(m *Measurement) string {
	if len(m.Samples) == 1 {
		return fmt.Sprintf("%.2f s", m.Median)
	}
	return fmt.Sprintf("%.2f s (%.2f–%.2f)", m.Median, m.Min, m.Max)
}

// cell escapes a markdown table cell; a leading indent becomes "↳ ".
func cell(s string) string {
	if strings.HasPrefix(s, "  ") {
		s = "↳ " + strings.TrimSpace(s)
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

func label(id string) string {
	if l, ok := labels[id]; ok {
		return l
	}
	return id
}

func abbreviate(s string) string {
	if len(s) > 400 {
		return s[:300] + " … " + s[len(s)-80:]
	}
	return s
}

// human renders byte counts as p7bundle does.
var human = humanize.Bytes

func sizeLabel(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprint(n)
}

func machineFacts(dir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if k == "model name" && m.CPU == "" {
				m.CPU = v
			}
			if k == "flags" && strings.Contains(" "+v+" ", " sha_ni ") {
				m.SHANI = true
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemBytes = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("df", "-h", "--output=fstype,size,avail", dir).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) == 3 {
			m.Filesystem = fmt.Sprintf("%s (%s, %s free at the start)", f[0], f[1], f[2])
		}
	}
	return m
}

func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	var a, c, d float64
	fmt.Sscanf(string(b), "%f %f %f", &a, &c, &d)
	return []float64{a, c, d}
}

// toolVersions records the first line of each tool's version output.
func (b *Bench) toolVersions(ctx context.Context) map[string]string {
	out := map[string]string{"go (harness)": runtime.Version()}
	ver := func(name string, argv ...string) {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		raw, err := cmd.CombinedOutput()
		if err != nil && len(raw) == 0 {
			out[name] = "unknown (" + err.Error() + ")"
			return
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		v := strings.TrimSpace(lines[0])
		for _, l := range lines { // cosign, oras: a table; keep the version line
			if f := strings.Fields(l); len(f) >= 2 && (f[0] == "GitVersion:" || f[0] == "Version:") {
				v = f[len(f)-1]
				break
			}
		}
		out[name] = v
	}
	ver("p7bundle", b.cfg.Bin, "version")
	if raw, err := exec.CommandContext(ctx, "go", "version", b.cfg.Bin).Output(); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 1 {
			out["go (p7bundle)"] = f[len(f)-1]
		}
	}
	ver("crane", b.tools["crane"], "version")
	ver("oras", b.tools["oras"], "version")
	ver("cosign", b.tools["cosign"], "version")
	ver("zstd", "zstd", "--version")
	ver("openssl", "openssl", "version")
	ver("tar", "tar", "--version")
	ver("sha256sum", "sha256sum", "--version")
	ver("docker-registry", b.tools["docker-registry"], "--version")
	if b.tools["time"] != "" {
		out["peak RSS from"] = b.tools["time"] + " -v"
	} else {
		out["peak RSS from"] = "wait4 rusage (/usr/bin/time not installed)"
	}
	return out
}
