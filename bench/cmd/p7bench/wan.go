package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/internal/testing/faultproxy"
)

// WAN is the link a build host has to registry.pseven.io: the builds run
// in their own network namespace and reach the source registry through a
// veth shaped by tbf (this kernel has tbf but no netem) and the fault
// proxy, which adds the round trip to every request.
type WAN struct {
	Size    int64 // workload bytes; 0 skips the scenario
	RateBit int64 // link rate, bits per second
	RTT     time.Duration
}

// ParseRate reads a tc-style rate: "200mbit", "1gbit", "500kbit".
func ParseRate(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("rate %q: want e.g. 200mbit", s)
	}
	return int64(n * float64(mult)), nil
}

// wanLink is a namespace whose only way out is a shaped veth to the host.
type wanLink struct {
	ns, hostDev string
	hostIP      string
}

const (
	wanHostIP = "10.213.77.1"
	wanNSIP   = "10.213.77.2"
)

func runLinkCmd(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func newWANLink(ctx context.Context, rateBit int64) (*wanLink, error) {
	id := strconv.Itoa(os.Getpid() % 100000)
	l := &wanLink{ns: "p7wan-" + id, hostDev: "p7wan" + id, hostIP: wanHostIP}
	nsDev := l.hostDev + "n"
	rate := strconv.FormatInt(rateBit, 10) + "bit"
	// A burst of 1 ms at the rate (at least 64 KiB), as tc-tbf(8) advises for fast links.
	burst := strconv.FormatInt(max(rateBit/8/1000, 64<<10), 10)
	steps := [][]string{
		{"ip", "netns", "add", l.ns},
		{"ip", "link", "add", l.hostDev, "type", "veth", "peer", "name", nsDev},
		{"ip", "link", "set", nsDev, "netns", l.ns},
		{"ip", "addr", "add", wanHostIP + "/30", "dev", l.hostDev},
		{"ip", "link", "set", l.hostDev, "up"},
		{"ip", "-n", l.ns, "addr", "add", wanNSIP + "/30", "dev", nsDev},
		{"ip", "-n", l.ns, "link", "set", nsDev, "up"},
		{"ip", "-n", l.ns, "link", "set", "lo", "up"},
		// Both directions: downloads leave the host's end, uploads the namespace's.
		{"tc", "qdisc", "add", "dev", l.hostDev, "root", "tbf", "rate", rate, "burst", burst, "latency", "50ms"},
		{"ip", "netns", "exec", l.ns, "tc", "qdisc", "add", "dev", nsDev, "root", "tbf", "rate", rate, "burst", burst, "latency", "50ms"},
	}
	for _, s := range steps {
		if err := runLinkCmd(ctx, s...); err != nil {
			l.close()
			return nil, fmt.Errorf("WAN link (needs root, iproute2 and the tbf qdisc): %w", err)
		}
	}
	return l, nil
}

func (l *wanLink) close() {
	exec.Command("ip", "link", "del", l.hostDev).Run()
	exec.Command("ip", "netns", "del", l.ns).Run()
}

// inside runs spec in the link's namespace.
func (l *wanLink) inside(spec cmdSpec) cmdSpec {
	if spec.Script != "" {
		spec.Argv, spec.Script = []string{"bash", "-c", "set -euo pipefail; " + spec.Script}, ""
	}
	spec.Argv = append([]string{"ip", "netns", "exec", l.ns}, spec.Argv...)
	return spec
}

// wan measures the build over the shaped link against its transfer floor:
// the source bytes over the link's rate.
func (b *Bench) wan(ctx context.Context) error {
	cfg := b.cfg.WAN
	dir := b.dir("wan")
	b.logf("WAN build: %s %s workload over %s, %s round trip", human(cfg.Size), b.wl, rateLabel(cfg.RateBit), cfg.RTT)
	src, w, chart, err := b.source(ctx, dir, cfg.Size)
	if err != nil {
		return err
	}
	defer b.stopRegistry(src)
	link, err := newWANLink(ctx, cfg.RateBit)
	if err != nil {
		return err
	}
	defer link.close()
	proxy, err := faultproxy.Start(faultproxy.Options{Target: "http://" + src.Host, Delay: cfg.RTT, Listen: wanHostIP + ":0"})
	if err != nil {
		return err
	}
	defer proxy.Close()
	floor := float64(w.UniqueBytes) * 8 / float64(cfg.RateBit)
	b.cur.WAN = &WANSummary{Bytes: w.UniqueBytes, RateBit: cfg.RateBit, RTTms: cfg.RTT.Milliseconds(), FloorSeconds: floor}
	for round := 1; round <= b.cfg.Runs; round++ {
		b.logf("WAN: round %d of %d", round, b.cfg.Runs)
		rd := filepath.Join(dir, fmt.Sprintf("round-%d", round))
		bundle := filepath.Join(rd, "p7", workload.ChartName+"-"+workload.ChartVersion+".tar.zst")
		sides := []func() error{
			func() error {
				os.MkdirAll(filepath.Dir(bundle), 0o755)
				before := proxy.BytesOut.Load()
				_, err := b.measure(ctx, "wan.build.p7bundle", link.inside(b.p7Build(chart, bundle, proxy.Host, filepath.Dir(bundle))))
				b.cur.WAN.P7Bytes = proxy.BytesOut.Load() - before
				return err
			},
			func() error {
				layout := filepath.Join(rd, "script", "layout")
				os.MkdirAll(filepath.Dir(layout), 0o755)
				pull, err := b.measure(ctx, "wan.build.script.pull", link.inside(b.cranePull(w, proxy.Host, layout)))
				if err != nil {
					return err
				}
				out := filepath.Join(rd, "script", "images.tar.zst")
				pack, err := b.measure(ctx, "wan.build.script.pack", cmdSpec{Script: fmt.Sprintf(
					"tar -C %s -cf - . | zstd -T0 -3 -q -o %s && sha256sum %s > %s.sha256", q(layout), q(out), q(out), q(out))})
				if err != nil {
					return err
				}
				b.composite("wan.build.script", pull, pack)
				return nil
			},
		}
		if h := b.hauler; h != nil {
			sides = append(sides, func() error {
				return h.build(ctx, b, "wan.build.hauler", w, proxy.Host, filepath.Join(rd, "hauler"), link.inside)
			})
		}
		if err := rotate(round, sides); err != nil {
			return err
		}
		os.RemoveAll(rd)
		// Computed, not measured: one sample a round keeps the per-round ratios.
		b.record("wan.floor.transfer", fmt.Sprintf("%d bytes at %s", w.UniqueBytes, rateLabel(cfg.RateBit)), Sample{Wall: floor})
	}
	return nil
}

// rotate runs the sides of one round, starting with a different side each
// round so that none always runs first (on a cold or a warm machine).
func rotate(round int, sides []func() error) error {
	for i := range sides {
		if err := sides[(round-1+i)%len(sides)](); err != nil {
			return err
		}
	}
	return nil
}

func rateLabel(bit int64) string {
	switch {
	case bit%1e9 == 0:
		return fmt.Sprintf("%d Gbit/s", bit/1e9)
	case bit%1e6 == 0:
		return fmt.Sprintf("%d Mbit/s", bit/1e6)
	}
	return fmt.Sprintf("%d kbit/s", bit/1e3)
}
