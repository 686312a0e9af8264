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
	"slices"
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
	// Workloads, in the order they ran; each has every pair.
	Workloads []*WorkloadResult `json:"workloads"`
	// Measurements have IDs WORKLOAD/STEP: "gzip/build.p7bundle".
	Measurements []*Measurement `json:"measurements"`
	Pairs        []Pair         `json:"pairs"`
	Targets      []Target       `json:"targets"`
	Checks       []Check        `json:"checks"`
	Noise        Noise          `json:"noise"`

	// v1 is v1-latest.json beside latest.md (format v1's results), when
	// write finds it: latest.md compares with it.
	v1 *v1Result
}

// WorkloadResult is what one workload (raw, gzip) measured beyond its samples.
type WorkloadResult struct {
	Name           string           `json:"name"`
	LayerMediaType string           `json:"layerMediaType"`
	Main           *WorkloadSummary `json:"main"`
	Second         *WorkloadSummary `json:"second,omitempty"`
	Monthly        *MonthlySummary  `json:"monthly,omitempty"`
	Split          *SplitSummary    `json:"split,omitempty"`
	WAN            *WANSummary      `json:"wan,omitempty"`
}

// WANSummary is the WAN-shaped build: the link and its transfer floor.
type WANSummary struct {
	Bytes        int64   `json:"bytes"` // the workload's blobs, as stored
	RateBit      int64   `json:"rateBitPerSecond"`
	RTTms        int64   `json:"rttMs"`
	FloorSeconds float64 `json:"floorSeconds"` // Bytes over the rate
	// P7Bytes went through the link in p7bundle's last build (manifests,
	// signature lookups and the probe included).
	P7Bytes int64 `json:"p7bundleBytes"`
}

// SplitSummary is the split + join check: the bundle built with
// --split-size, joined by `p7bundle join`.
type SplitSummary struct {
	SplitSize    int64  `json:"splitSizeBytes"`
	Parts        int    `json:"parts"`
	LargestPart  int64  `json:"largestPartBytes"`
	Bytes        int64  `json:"bytes"`
	JoinedDigest string `json:"joinedDigest"`
	// Identical: the joined file and parts.json's digest are the unsplit bundle's.
	Identical bool `json:"identical"`
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
	Images      int   `json:"images"`
	Blobs       int   `json:"blobs"`
	UniqueBytes int64 `json:"uniqueBytes"` // blobs as stored (gzip layers compressed)
	// ContentBytes counts layers uncompressed (= UniqueBytes for raw).
	ContentBytes   int64   `json:"contentBytes"`
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

// Pair compares p7bundle with its alternative, within one workload.
type Pair struct {
	Workload  string  `json:"workload"`
	Name      string  `json:"name"`
	P7        string  `json:"p7bundle"`
	Baseline  string  `json:"baseline"`
	Ratio     float64 `json:"ratio"` // median / median
	RatioMin  float64 `json:"ratioMin"`
	RatioMax  float64 `json:"ratioMax"`
	Target    float64 `json:"target,omitempty"` // ratio must be <= Target
	Reference bool    `json:"reference,omitempty"`
}

// Target is one goal, met or missed, for one workload.
type Target struct {
	Workload string `json:"workload"`
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Actual   string `json:"actual"`
	Met      bool   `json:"met"`
}

// Check is a correctness check made along the way.
type Check struct {
	Workload string `json:"workload,omitempty"`
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`
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

// workload returns the result of workload k, adding it.
func (r *Result) workload(k workload.Kind) *WorkloadResult {
	for _, w := range r.Workloads {
		if w.Name == string(k) {
			return w
		}
	}
	w := &WorkloadResult{Name: string(k), LayerMediaType: k.MediaType()}
	r.Workloads = append(r.Workloads, w)
	return w
}

// splitID splits a measurement ID into workload and step.
func splitID(id string) (wl, step string) {
	if w, s, ok := strings.Cut(id, "/"); ok {
		return w, s
	}
	return "", id
}

func stepOf(id string) string { _, s := splitID(id); return s }

func (r *Result) check(wl, name string, ok bool, detail string) {
	for i, c := range r.Checks {
		if c.Workload == wl && c.Name == name { // one entry per check: the last detail, failed if any round failed
			r.Checks[i].OK = c.OK && ok
			if !ok || c.OK {
				r.Checks[i].Detail = detail
			}
			return
		}
	}
	r.Checks = append(r.Checks, Check{Workload: wl, Name: name, OK: ok, Detail: detail})
}

func summarize(w *workload.Workload) *WorkloadSummary {
	s := &WorkloadSummary{Images: len(w.Images), Blobs: w.Blobs, UniqueBytes: w.UniqueBytes, ContentBytes: w.ContentBytes, ImageBytes: w.ImageBytes}
	if w.ContentBytes > 0 {
		s.RandomFraction = float64(w.RandomBytes) / float64(w.ContentBytes)
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

	for _, wl := range r.Workloads {
		r.finishWorkload(wl)
	}
}

// Goals. Ratios are p7bundle's median over the other side's, within a workload.
const (
	goalBuild     = 0.60 // × crane pull + tar | zstd -T0 -3 + sha256sum
	goalInstall   = 0.50 // × zstd -d | tar -x + oras cp
	goalCeiling   = 1.15 // × the registry's raw ingest
	goalReinstall = 0.02 // × the first install
	goalVerify    = 1.50 // × openssl dgst -sha256
	goalDelta     = 0.15 // × the full bundle's install over the same site
	goalHauler    = 1.00 // × hauler store sync + store save
	goalWAN       = 1.10 // × the link's transfer floor
	rssLimitKiB   = 256 << 10
)

// finishWorkload adds the pairs and targets of one workload.
func (r *Result) finishWorkload(wl *WorkloadResult) {
	id := func(step string) string { return wl.Name + "/" + step }
	pair := func(name, p7, base string, target float64, reference bool) *Pair {
		a, b := r.get(id(p7)), r.get(id(base))
		if a == nil || b == nil {
			return nil
		}
		p := Pair{Workload: wl.Name, Name: name, P7: a.ID, Baseline: b.ID, Ratio: a.Median / b.Median, Target: target, Reference: reference}
		p.RatioMin, p.RatioMax = math.Inf(1), math.Inf(-1)
		for i := range min(len(a.Samples), len(b.Samples)) {
			x := a.Samples[i].Wall / b.Samples[i].Wall
			p.RatioMin, p.RatioMax = min(p.RatioMin, x), max(p.RatioMax, x)
		}
		r.Pairs = append(r.Pairs, p)
		return &r.Pairs[len(r.Pairs)-1]
	}
	target := func(name, goal, actual string, met bool) {
		r.Targets = append(r.Targets, Target{Workload: wl.Name, Name: name, Goal: goal, Actual: actual, Met: met})
	}
	ratioTarget := func(name, goal string, p *Pair) {
		if p == nil {
			return
		}
		actual := fmt.Sprintf("%.2f×", p.Ratio)
		if met := p.Ratio <= p.Target; met != (math.Round(p.Ratio*100) <= math.Round(p.Target*100)) {
			actual = fmt.Sprintf("%.3f×", p.Ratio) // 0.50× would read as met
		}
		if p.RatioMin != p.RatioMax {
			actual += fmt.Sprintf(" (rounds %.2f–%.2f)", p.RatioMin, p.RatioMax)
		}
		target(name, goal, actual, p.Ratio <= p.Target)
	}
	ratioTarget("build", fmt.Sprintf("≤ %.2f× crane pull + tar | zstd -T0 -3 + sha256sum", goalBuild),
		pair("build", "build.p7bundle", "build.script", goalBuild, false))
	pair("build vs zstd floor", "build.p7bundle", "build.floor.zstd", 0, true)
	ratioTarget("install", fmt.Sprintf("≤ %.2f× zstd -d | tar -x + oras cp", goalInstall),
		pair("install", "install.p7bundle", "install.script", goalInstall, false))
	ratioTarget("install vs ingest ceiling", fmt.Sprintf("≤ %.2f× the registry's raw ingest", goalCeiling),
		pair("install vs registry ingest ceiling", "install.p7bundle", "install.ceiling.raw-x4", goalCeiling, false))
	pair("install vs zstd -d floor", "install.p7bundle", "install.floor.zstd-d", 0, true)
	ratioTarget("re-install", fmt.Sprintf("≤ %.2f× first install", goalReinstall),
		pair("re-install vs first install", "reinstall.p7bundle", "install.p7bundle", goalReinstall, false))
	ratioTarget("verify", fmt.Sprintf("≤ %.2f× openssl dgst -sha256", goalVerify),
		pair("verify vs openssl dgst", "verify.p7bundle", "verify.script.openssl", goalVerify, false))
	pair("verify vs openssl dgst + cosign verify-blob", "verify.p7bundle", "verify.script", 0, true)

	if mo := wl.Monthly; mo != nil {
		target("differential bundle size", "≤ 1.02× the changed bytes",
			fmt.Sprintf("%s for %s changed (%.2f×); the full bundle is %s", human(mo.DeltaBundleBytes), human(mo.ChangedBytes),
				float64(mo.DeltaBundleBytes)/float64(max(mo.ChangedBytes, 1)), human(mo.FullBundleBytes)),
			float64(mo.DeltaBundleBytes) <= 1.02*float64(mo.ChangedBytes))
		ratioTarget("differential install", fmt.Sprintf("≤ %.2f× the full bundle's install over the same site", goalDelta),
			pair("monthly install: differential vs full bundle", "monthly.install.delta", "monthly.install.full", goalDelta, false))
		pair("monthly build: differential vs full bundle", "monthly.build.delta", "monthly.build.full", 0, true)
	}

	ratioTarget("build vs Hauler", fmt.Sprintf("≤ %.2f× hauler store sync + store save", goalHauler),
		pair("build vs Hauler", "build.p7bundle", "build.hauler", goalHauler, false))
	pair("install vs Hauler", "install.p7bundle", "install.hauler", 0, true)
	if wan := wl.WAN; wan != nil {
		ratioTarget("WAN build", fmt.Sprintf("≤ %.2f× the transfer floor: %s at %s, %d ms round trip", goalWAN,
			human(wan.Bytes), rateLabel(wan.RateBit), wan.RTTms),
			pair("WAN build vs transfer floor", "wan.build.p7bundle", "wan.floor.transfer", goalWAN, false))
		pair("WAN build vs script", "wan.build.p7bundle", "wan.build.script", 0, true)
		pair("WAN build vs Hauler", "wan.build.p7bundle", "wan.build.hauler", 0, true)
	}

	var rssParts []string
	rssMax := int64(0)
	for _, x := range []struct{ step, what string }{{"build.p7bundle", "build"}, {"install.p7bundle", "push"},
		{"second.build.p7bundle", "build at " + sizeLabel(r.SecondSize)}, {"second.install.p7bundle", "push at " + sizeLabel(r.SecondSize)}} {
		if m := r.get(id(x.step)); m != nil {
			rssParts = append(rssParts, fmt.Sprintf("%s %s", x.what, human(m.MaxRSSKiB<<10)))
			rssMax = max(rssMax, m.MaxRSSKiB)
		}
	}
	if len(rssParts) > 0 {
		target("peak RSS", "≤ 256 MiB for build and install at both sizes", strings.Join(rssParts, ", "), rssMax <= rssLimitKiB)
	}
	var open, scratch, fsys int64
	samples := 0
	for _, step := range []string{"install.p7bundle", "reinstall.p7bundle", "second.install.p7bundle"} {
		if m := r.get(id(step)); m != nil {
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
		if wl.Main != nil && wl.Main.ExtractedBytes > 0 {
			actual += fmt.Sprintf("; the scripted install extracts %s", human(wl.Main.ExtractedBytes))
		}
		target("extra disk during install", "0 beyond the bundle", actual, open == 0 && scratch == 0)
	}

	if sp := wl.Split; sp != nil {
		sb, jn := pair("split build vs build", "split.build.p7bundle", "build.p7bundle", 0, true),
			pair("join vs cat + sha256sum", "split.join.p7bundle", "split.join.script", 0, true)
		actual := fmt.Sprintf("%d parts of ≤ %s (largest %s)", sp.Parts, human(sp.SplitSize), human(sp.LargestPart))
		if sb != nil {
			actual += fmt.Sprintf("; split build %.2f s (%.2f× the unsplit build)", r.get(sb.P7).Median, sb.Ratio)
		}
		if jn != nil {
			j := r.get(jn.P7)
			actual += fmt.Sprintf("; join %.2f s, %.0f MB/s (cat + sha256sum %.2f s)", j.Median, float64(sp.Bytes)/j.Median/1e6, r.get(jn.Baseline).Median)
		}
		if sp.Identical {
			actual += "; joined sha256 = unsplit sha256"
		} else {
			actual += "; joined sha256 " + sp.JoinedDigest + " ≠ the unsplit bundle's"
		}
		target("split + join", "joined file = the unsplit bundle (sha256); times reported", actual, sp.Identical)
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

// labels name measurement steps in the report.
var labels = map[string]string{
	"build.p7bundle":          "p7bundle build",
	"build.script":            "script: crane pull + tar | zstd + sha256sum",
	"build.script.pull":       "  crane pull --format oci (30 images)",
	"build.script.tar-zstd":   "  tar -c | zstd -T0 -3",
	"build.script.sha256sum":  "  sha256sum",
	"build.floor.zstd":        "floor: zstd -T0 -3 of the tar on disk",
	"install.p7bundle":        "p7bundle push (empty registry, default --jobs)",
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
	"split.build.p7bundle":    "p7bundle build --split-size",
	"split.join.p7bundle":     "p7bundle join",
	"split.join.script":       "by hand: cat of the parts + sha256sum",
	"monthly.build.full":      "monthly: p7bundle build (full)",
	"monthly.build.delta":     "monthly: p7bundle build --base (differential)",
	"monthly.install.full":    "monthly: p7bundle push of the full bundle",
	"monthly.install.delta":   "monthly: p7bundle push of the differential bundle",
	"second.build.p7bundle":   "p7bundle build",
	"second.install.p7bundle": "p7bundle push (empty registry)",
	"second.verify.p7bundle":  "p7bundle verify",
	"build.hauler":            "Hauler: store sync + store save",
	"build.hauler.sync":       "  hauler store sync",
	"build.hauler.save":       "  hauler store save",
	"install.hauler":          "Hauler: store load + store copy",
	"install.hauler.load":     "  hauler store load",
	"install.hauler.copy":     "  hauler store copy",
	"wan.build.p7bundle":      "WAN: p7bundle build",
	"wan.build.script":        "WAN: crane pull + tar | zstd + sha256sum",
	"wan.build.script.pull":   "  crane pull over the link",
	"wan.build.script.pack":   "  tar | zstd -T0 -3 + sha256sum",
	"wan.build.hauler":        "WAN: hauler store sync + store save",
	"wan.build.hauler.sync":   "  hauler store sync over the link",
	"wan.build.hauler.save":   "  hauler store save",
	"wan.floor.transfer":      "floor: the workload's bytes at the link's rate",
}

// describe says how a workload's layers are stored.
var describe = map[string]string{
	"raw":  "uncompressed tar layers",
	"gzip": "layers gzip-compressed as `docker push` stores them (compress/gzip, default level; the raw workload's tars)",
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
	r.v1 = loadV1(dir)
	md := r.markdown()
	if _, err := os.Stat(filepath.Join(dir, "analysis.md")); err == nil {
		md = strings.Replace(md, "\n## Targets", "\nWhy targets are missed, from profiles: [analysis.md](analysis.md) (hand-written; check its date and version against this run).\n\n## Targets", 1)
	}
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md), 0o644)
}

// v1Result is what latest.md compares with from v1-latest.json, the last
// results of bundle format v1 (one workload, the raw one, unprefixed IDs).
type v1Result struct {
	Generated    string            `json:"generated"`
	Size         int64             `json:"sizeBytes"`
	Seed         uint64            `json:"seed"`
	Runs         int               `json:"runs"`
	Tools        map[string]string `json:"tools"`
	Workload     *WorkloadSummary  `json:"workload"`
	Measurements []*Measurement    `json:"measurements"`
	Pairs        []Pair            `json:"pairs"`
	// hasMD: v1-latest.md is there too (the link target).
	hasMD bool
}

// loadV1 reads dir/v1-latest.json (and notes dir/v1-latest.md); nil when
// neither is there.
func loadV1(dir string) *v1Result {
	v := &v1Result{}
	_, err := os.Stat(filepath.Join(dir, "v1-latest.md"))
	v.hasMD = err == nil
	raw, err := os.ReadFile(filepath.Join(dir, "v1-latest.json"))
	if err != nil || json.Unmarshal(raw, v) != nil {
		if !v.hasMD {
			return nil
		}
		*v = v1Result{hasMD: true}
	}
	return v
}

func (v *v1Result) get(id string) *Measurement {
	for _, m := range v.Measurements {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func (v *v1Result) ratio(pair string) (float64, bool) {
	for _, p := range v.Pairs {
		if p.Name == pair {
			return p.Ratio, true
		}
	}
	return 0, false
}

// names lists the workloads of the run.
func (r *Result) names() []string {
	var out []string
	for _, w := range r.Workloads {
		out = append(out, w.Name)
	}
	return out
}

func (r *Result) pairOf(wl, name string) *Pair {
	for i := range r.Pairs {
		if r.Pairs[i].Workload == wl && r.Pairs[i].Name == name {
			return &r.Pairs[i]
		}
	}
	return nil
}

func (r *Result) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	names := r.names()
	p("# p7bundle benchmark: latest results\n\n")
	p("Generated %s by `make bench` (`%s`) in %.1f min: BENCH_SIZE=%s, seed %d, %d rounds, workloads %s. "+
		"Each workload runs every pair, one workload after the other; "+
		"within a round the two sides of each pair run back to back, their order alternating between rounds. "+
		"Times are wall-clock seconds: the median, then min–max over the rounds. Ratios are p7bundle's median over the other side's median "+
		"(min–max of the per-round ratios in brackets). See [bench/README.md](../README.md) for the method.\n\n",
		r.Generated, r.Command, r.ElapsedSeconds/60, sizeLabel(r.Size), r.Seed, r.Runs, strings.Join(names, " and "))
	for _, w := range r.Workloads {
		p("- **%s**: %s; layer media type `%s`.\n", w.Name, describe[w.Name], w.LayerMediaType)
	}
	if r.v1 != nil && r.v1.hasMD {
		p("\nFormat v1's last results, for comparison: [v1-latest.md](v1-latest.md) (raw workload only; compared [below](#compared-with-format-v1)).\n")
	}

	head := func(first ...string) {
		cols := append(first, names...)
		p("| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	}
	p("\n## Targets\n\n")
	head("target", "goal")
	var tnames []string
	for _, t := range r.Targets {
		if !slices.Contains(tnames, t.Name) {
			tnames = append(tnames, t.Name)
		}
	}
	for _, name := range tnames {
		goal := ""
		var cells []string
		for _, wl := range names {
			c := "–"
			for _, t := range r.Targets {
				if t.Workload == wl && t.Name == name {
					v := "**PASS**"
					if !t.Met {
						v = "**MISS**"
					}
					goal, c = t.Goal, v+" "+cell(t.Actual)
				}
			}
			cells = append(cells, c)
		}
		p("| %s | %s | %s |\n", name, cell(goal), strings.Join(cells, " | "))
	}

	p("\n## Pairs\n\n")
	head("pair", "goal", "other side")
	var pnames []string
	for _, pr := range r.Pairs {
		if !slices.Contains(pnames, pr.Name) {
			pnames = append(pnames, pr.Name)
		}
	}
	for _, name := range pnames {
		goal, other := "reference", ""
		var cells []string
		for _, wl := range names {
			pr := r.pairOf(wl, name)
			if pr == nil {
				cells = append(cells, "–")
				continue
			}
			if !pr.Reference {
				goal = fmt.Sprintf("≤ %.2f×", pr.Target)
			}
			other = strings.TrimSpace(label(pr.Baseline))
			a, c := r.get(pr.P7), r.get(pr.Baseline)
			x := fmt.Sprintf("%s vs %s: **%.2f×**", span(a), span(c), pr.Ratio)
			if pr.RatioMin != pr.RatioMax {
				x += fmt.Sprintf(" (%.2f–%.2f)", pr.RatioMin, pr.RatioMax)
			}
			cells = append(cells, x)
		}
		p("| %s | %s | %s | %s |\n", name, goal, cell(other), strings.Join(cells, " | "))
	}

	if r.v1 != nil {
		r.compareV1(&b)
	}

	for _, wl := range r.Workloads {
		if wl.Main == nil {
			continue
		}
		p("\n## Every measurement: %s workload at %s\n\n", wl.Name, sizeLabel(r.Size))
		p("| step | median s | min–max s | CV | throughput | peak RSS | CPU user+sys s | registry CPU s | other load / kernel threads (cores) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range r.Measurements {
			if w, step := splitID(m.ID); w == wl.Name && !strings.HasPrefix(step, "second.") && !strings.HasPrefix(step, "wan.") {
				r.row(&b, m, wl.Main)
			}
		}
	}
	for _, wl := range r.Workloads {
		wan := wl.WAN
		if wan == nil {
			continue
		}
		p("\n## WAN-shaped build: %s workload at %s over %s, %d ms round trip\n\n", wl.Name, human(wan.Bytes), rateLabel(wan.RateBit), wan.RTTms)
		p("The builds run in their own network namespace and reach the source registry through a veth pair shaped by `tc tbf` "+
			"in both directions and the fault proxy, which adds the round trip to every request (this kernel has no netem). "+
			"The floor is the workload's bytes at the link's rate; tbf also counts TCP/IP and Ethernet headers (~4.5 %% of a full "+
			"segment), so no client reaches it. p7bundle's last build moved %s through the link (manifests, signature lookups and all).\n\n", human(wan.P7Bytes))
		p("| step | median s | min–max s | CV | throughput | peak RSS | CPU user+sys s | registry CPU s | other load / kernel threads (cores) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range r.Measurements {
			if w, step := splitID(m.ID); w == wl.Name && strings.HasPrefix(step, "wan.") {
				r.row(&b, m, &WorkloadSummary{UniqueBytes: wan.Bytes})
			}
		}
	}
	if r.SecondSize > 0 && slices.ContainsFunc(r.Workloads, func(w *WorkloadResult) bool { return w.Second != nil }) {
		p("\n## Second size: %s (one run each, for peak RSS and scaling)\n\n", sizeLabel(r.SecondSize))
		p("| workload | step | s | throughput | peak RSS | CPU user+sys s | registry CPU s | other load / kernel threads (cores) |\n|---|---|---|---|---|---|---|---|\n")
		for _, wl := range r.Workloads {
			if wl.Second == nil {
				continue
			}
			for _, m := range r.Measurements {
				if w, step := splitID(m.ID); w != wl.Name || !strings.HasPrefix(step, "second.") {
					continue
				}
				s := m.Samples[0]
				p("| %s | %s | %.2f | %s | %s | %.1f | %.1f | %.2f / %.2f |\n", wl.Name, cell(label(m.ID)), s.Wall, throughput(m, wl.Second), human(s.MaxRSSKiB<<10),
					s.User+s.Sys, s.RegistryCPU, s.Background, s.Kernel)
			}
		}
		p("\n")
		for _, wl := range r.Workloads {
			id := func(step string) *Measurement { return r.get(wl.Name + "/" + step) }
			if a, c := id("build.p7bundle"), id("second.build.p7bundle"); a != nil && c != nil {
				p("- %s: peak RSS, %s → %s: build %s → %s, push %s → %s.\n", wl.Name, sizeLabel(r.Size), sizeLabel(r.SecondSize),
					human(a.MaxRSSKiB<<10), human(c.MaxRSSKiB<<10), human(rss(id("install.p7bundle"))<<10), human(rss(id("second.install.p7bundle"))<<10))
			}
		}
	}

	p("\n## Workload\n\n")
	for _, wl := range r.Workloads {
		for _, x := range []struct {
			size int64
			w    *WorkloadSummary
		}{{r.Size, wl.Main}, {r.SecondSize, wl.Second}} {
			if x.w == nil {
				continue
			}
			w := x.w
			var big []string
			for _, l := range w.Largest {
				big = append(big, fmt.Sprintf("%s %s", l.Name, human(l.Size)))
			}
			content := ""
			if w.ContentBytes > 0 && w.ContentBytes != w.UniqueBytes {
				content = fmt.Sprintf(", %s uncompressed", human(w.ContentBytes))
			}
			p("- **%s, %s**: %d images (one tag, %s), %d blobs, %s unique%s (%s summed over images: base layers are shared), "+
				"%.0f%% random bytes, the rest text-like; %s. Largest: %s; median image %s, smallest %s. "+
				"Bundle %s (%.0f%% of the blobs).\n",
				wl.Name, sizeLabel(x.size), w.Images, workload.AppVersion, w.Blobs, human(w.UniqueBytes), content, human(w.ImageBytes), 100*w.RandomFraction,
				describe[wl.Name], strings.Join(big, ", "), human(w.MedianImage), human(w.SmallestImage), human(w.BundleBytes),
				100*float64(w.BundleBytes)/float64(max(w.UniqueBytes, 1)))
		}
		if mo := wl.Monthly; mo != nil {
			p("- **%s, monthly scenario** (at %s): next month's release (%s, %d of the images changed, the others re-tagged; %s of new blobs, about %.0f%% of the bytes): "+
				"full bundle %s, differential bundle (`build --base`) %s; each installed over a site registry holding this month's release.\n",
				wl.Name, sizeLabel(r.Size), workload.NextAppVersion, mo.ChangedImages, human(mo.ChangedBytes), 100*monthlyChange, human(mo.FullBundleBytes), human(mo.DeltaBundleBytes))
		}
		if sp := wl.Split; sp != nil {
			p("- **%s, split** (at %s): `build --split-size %d` (%s, a quarter of the bundle, at least 8 MiB) wrote %d parts, the largest %s, %s in all; `p7bundle join` gave %s.\n",
				wl.Name, sizeLabel(r.Size), sp.SplitSize, human(sp.SplitSize), sp.Parts, human(sp.LargestPart), human(sp.Bytes), sp.JoinedDigest)
		}
	}
	p("\n## Checks\n\n")
	for _, c := range r.Checks {
		v := "ok"
		if !c.OK {
			v = "FAILED"
		}
		wl := ""
		if c.Workload != "" {
			wl = c.Workload + ": "
		}
		p("- %s%s: **%s** (%s)\n", wl, c.Name, v, c.Detail)
	}
	m := r.Machine
	p("\n## Machine and tools\n\n")
	p("- %s, %d cores, %s RAM, Linux %s, SHA-NI %v; scratch on %s\n", m.CPU, m.Cores, human(m.MemBytes), m.Kernel, m.SHANI, m.Filesystem)
	p("- load average before %v, after %v; other processes kept a median %.2f cores busy during a measurement (max %.2f); median CV of the timings %.1f%%\n",
		m.LoadBefore, m.LoadAfter, r.Noise.MedianBackgroundCores, r.Noise.MaxBackgroundCores, 100*r.Noise.MedianCV)
	var tools []string
	for k := range r.Tools {
		tools = append(tools, k)
	}
	sort.Strings(tools)
	for _, k := range tools {
		p("- %s: %s\n", k, r.Tools[k])
	}
	if len(names) == 0 {
		return b.String()
	}
	p("\n## Commands\n\nOf the %s workload (the others run the same ones in `$WORK/<workload>/`):\n\n", names[0])
	for _, m := range r.Measurements {
		if wl, step := splitID(m.ID); m.Command != "" && wl == names[0] && !strings.HasPrefix(step, "second.") {
			c := m.Command
			if r.WorkDir != "" {
				c = strings.ReplaceAll(c, r.WorkDir, "$WORK")
			}
			if r.Dir != "" {
				c = strings.ReplaceAll(c, r.Dir+"/", "")
			}
			p("- %s: `%s`\n", step, abbreviate(c))
		}
	}
	return b.String()
}

// compareV1 puts format v1's numbers (v1-latest.json) next to this run's.
func (r *Result) compareV1(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	v := r.v1
	p("\n## Compared with format v1\n\n")
	if v.Workload == nil {
		p("[v1-latest.md](v1-latest.md) holds format v1's last results (no v1-latest.json beside it to compare with).\n")
		return
	}
	p("[v1-latest.md](v1-latest.md) (and v1-latest.json) hold the last results of bundle format v1: %s, generated %s, BENCH_SIZE=%s, seed %d, %d rounds; "+
		"it measured the raw workload only, and had install goals of 0.60× and re-install 0.05×.\n",
		v.Tools["p7bundle"], v.Generated, sizeLabel(v.Size), v.Seed, v.Runs)
	if v.Size != r.Size || v.Seed != r.Seed {
		p("\nThis run is at another size or seed: not compared.\n")
		return
	}
	var raw, gz *WorkloadResult
	for _, w := range r.Workloads {
		switch w.Name {
		case "raw":
			raw = w
		case "gzip":
			gz = w
		}
	}
	if raw == nil {
		p("\nThis run has no raw workload: not compared.\n")
		return
	}
	p("\n| | format v1, raw | format v2, raw | v2 / v1 |")
	if gz != nil {
		p(" format v2, gzip |")
	}
	p("\n|---|---|---|---|")
	if gz != nil {
		p("---|")
	}
	p("\n")
	row := func(what string, v1, v2 float64, unit func(float64) string, v2gz float64, ok bool) {
		if !ok || v1 == 0 || math.IsNaN(v1) || math.IsNaN(v2) {
			return
		}
		p("| %s | %s | %s | %.2f× |", what, unit(v1), unit(v2), v2/v1)
		if gz != nil {
			if math.IsNaN(v2gz) {
				p(" – |")
			} else {
				p(" %s |", unit(v2gz))
			}
		}
		p("\n")
	}
	secs := func(x float64) string { return fmt.Sprintf("%.2f s", x) }
	bytes := func(x float64) string { return human(int64(x)) }
	ratio := func(x float64) string { return fmt.Sprintf("%.2f×", x) }
	med := func(m *Measurement) float64 {
		if m == nil {
			return math.NaN()
		}
		return m.Median
	}
	peak := func(m *Measurement) float64 {
		if m == nil {
			return math.NaN()
		}
		return float64(m.MaxRSSKiB << 10)
	}
	gzGet := func(step string) *Measurement {
		if gz == nil {
			return nil
		}
		return r.get("gzip/" + step)
	}
	for _, step := range []string{"build.p7bundle", "install.p7bundle", "reinstall.p7bundle", "verify.p7bundle",
		"monthly.build.delta", "monthly.install.delta"} {
		a := v.get(step)
		row(strings.TrimSpace(label(step)), med(a), med(r.get("raw/"+step)), secs, med(gzGet(step)), a != nil)
	}
	for _, x := range []struct{ what, step string }{{"peak RSS, build", "build.p7bundle"}, {"peak RSS, push", "install.p7bundle"}} {
		a := v.get(x.step)
		row(x.what, peak(a), peak(r.get("raw/"+x.step)), bytes, peak(gzGet(x.step)), a != nil)
	}
	if raw.Main != nil {
		g := math.NaN()
		if gz != nil && gz.Main != nil {
			g = float64(gz.Main.BundleBytes)
		}
		row("bundle size", float64(v.Workload.BundleBytes), float64(raw.Main.BundleBytes), bytes, g, true)
	}
	for _, name := range []string{"build", "install", "install vs registry ingest ceiling", "re-install vs first install",
		"verify vs openssl dgst", "monthly install: differential vs full bundle"} {
		a, ok := v.ratio(name)
		b, g := math.NaN(), math.NaN()
		if pr := r.pairOf("raw", name); pr != nil {
			b = pr.Ratio
		}
		if pr := r.pairOf("gzip", name); pr != nil {
			g = pr.Ratio
		}
		row("ratio: "+name, a, b, ratio, g, ok)
	}
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

// throughput is workload (blob) bytes per second, or bundle bytes for
// steps that only read the bundle.
func throughput(m *Measurement, w *WorkloadSummary) string {
	med := m.Median
	if med == 0 || math.IsNaN(med) {
		med = m.Samples[0].Wall
	}
	step := stepOf(m.ID)
	bytes := w.UniqueBytes
	what := ""
	switch {
	case strings.Contains(step, "verify"), strings.Contains(step, "zstd-d"), strings.HasSuffix(step, "sha256sum"), strings.HasPrefix(step, "split.join"):
		bytes, what = w.BundleBytes, " (bundle)"
	case strings.HasPrefix(step, "reinstall"), strings.HasPrefix(step, "monthly."):
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

// label names a measurement (WORKLOAD/STEP, or a bare step) in the report.
func label(id string) string {
	step := stepOf(id)
	if l, ok := labels[step]; ok {
		return l
	}
	return step
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
	if b.hauler != nil {
		ver("hauler", b.hauler.bin, "version") // GitVersion: v2.0.3
	}
	if b.tools["time"] != "" {
		out["peak RSS from"] = b.tools["time"] + " -v"
	} else {
		out["peak RSS from"] = "wait4 rusage (/usr/bin/time not installed)"
	}
	return out
}
