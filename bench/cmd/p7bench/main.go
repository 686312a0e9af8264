// Command p7bench measures p7bundle against the tools an admin would
// otherwise script (crane, tar, zstd, sha256sum, oras, openssl, cosign) on a
// generated pSeven-like workload served by a local docker-registry, and
// writes bench/results/latest.md and latest.json. `make bench` runs it; see
// bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
)

func main() {
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	size := flag.String("size", env("BENCH_SIZE", "2G"), "workload size (unique blob bytes): 64M, 2G, 8G, … ($BENCH_SIZE)")
	rssSize := flag.String("rss-size", env("BENCH_RSS_SIZE", ""), "second size for peak RSS, one build+push+verify; 0 skips (default 4× -size) ($BENCH_RSS_SIZE)")
	runs := flag.Int("runs", atoi(env("BENCH_RUNS", "3")), "rounds; medians over them ($BENCH_RUNS)")
	seed := flag.Uint64("seed", uint64(atoi(env("BENCH_SEED", "1"))), "workload seed ($BENCH_SEED)")
	workloads := flag.String("workloads", env("BENCH_WORKLOADS", "raw,gzip"), "workloads to measure, in order: raw (uncompressed tar layers), gzip (gzip layers, as docker push stores them) ($BENCH_WORKLOADS)")
	bin := flag.String("bin", "bin/p7bundle", "p7bundle binary")
	tools := flag.String("tools", env("P7BUNDLE_TOOLS_BIN", ".cache/tools/bin"), "directory with crane, oras and cosign")
	out := flag.String("out", "bench/results", "directory for latest.md and latest.json")
	work := flag.String("work", env("BENCH_WORK", ""), "scratch directory (default: a temporary one) ($BENCH_WORK)")
	keep := flag.Bool("keep", false, "keep the scratch directory")
	hauler := flag.String("hauler", env("HAULER", ""), "a Hauler v2 binary to measure beside p7bundle (store sync + save, load + copy) ($HAULER)")
	wanSize := flag.String("wan-size", env("BENCH_WAN_SIZE", "600M"), "gzip workload for the WAN-shaped build; 0 skips it (needs root, iproute2, tbf) ($BENCH_WAN_SIZE)")
	wanRate := flag.String("wan-rate", env("BENCH_WAN_RATE", "200mbit"), "the WAN link's rate ($BENCH_WAN_RATE)")
	wanRTT := flag.Duration("wan-rtt", mustDuration(env("BENCH_WAN_RTT", "30ms")), "the WAN's round trip, added to every request ($BENCH_WAN_RTT)")
	render := flag.String("render", "", "only rewrite latest.md from this latest.json (after a change to the report layout)")
	flag.Parse()
	if *render != "" {
		if err := rerender(*render); err != nil {
			fatal(err)
		}
		return
	}

	cfg := Config{Runs: *runs, Seed: *seed, Bin: *bin, Tools: *tools, Out: *out, Work: *work, Keep: *keep, Log: os.Stderr,
		Hauler: *hauler, WAN: WAN{RTT: *wanRTT}}
	var err error
	if cfg.WAN.Size, err = workload.ParseSize(*wanSize); err != nil {
		fatal(fmt.Errorf("-wan-size %q: want e.g. 600M, or 0", *wanSize))
	}
	if cfg.WAN.RateBit, err = ParseRate(*wanRate); err != nil {
		fatal(fmt.Errorf("-wan-rate: %w", err))
	}
	if cfg.Workloads, err = parseWorkloads(*workloads); err != nil {
		fatal(fmt.Errorf("-workloads: %w", err))
	}
	if cfg.Size, err = workload.ParseSize(*size); err != nil || cfg.Size <= 0 {
		fatal(fmt.Errorf("-size %q: want e.g. 64M, 2G", *size))
	}
	cfg.RSSSize = 4 * cfg.Size
	if *rssSize != "" {
		if cfg.RSSSize, err = workload.ParseSize(*rssSize); err != nil {
			fatal(fmt.Errorf("-rss-size %q: want e.g. 8G, or 0", *rssSize))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if err != nil {
		fatal(err)
	}
	fmt.Println()
	for _, t := range res.Targets {
		v := "PASS"
		if !t.Met {
			v = "MISS"
		}
		fmt.Printf("%s  %-4s  %-26s %s (goal %s)\n", v, t.Workload, t.Name, t.Actual, t.Goal)
	}
	for _, c := range res.Checks {
		if !c.OK {
			fatal(fmt.Errorf("check failed: %s: %s: %s", c.Workload, c.Name, c.Detail))
		}
	}
}

// parseWorkloads reads "raw,gzip".
func parseWorkloads(s string) ([]workload.Kind, error) {
	var out []workload.Kind
	for _, f := range strings.Split(s, ",") {
		k, err := workload.ParseKind(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, k) {
			return nil, fmt.Errorf("%s given twice", k)
		}
		out = append(out, k)
	}
	return out, nil
}

func rerender(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r Result
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Workloads) == 0 {
		return fmt.Errorf("%s has no workloads: written by an older p7bench (format v1's results are kept as they are)", path)
	}
	r.Pairs, r.Targets = nil, nil
	r.finish(time.Duration(r.ElapsedSeconds * float64(time.Second)))
	return r.write(filepath.Dir(path))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "p7bench:", err)
	os.Exit(1)
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fatal(fmt.Errorf("%q is not a duration (e.g. 30ms)", s))
	}
	return d
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fatal(fmt.Errorf("%q is not a number", s))
	}
	return n
}
