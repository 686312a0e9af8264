// Command p7ab compares two p7bundle binaries' push of one bundle, rounds
// alternating which goes first, each push into a fresh docker-registry:
// wall time, the client's CPU, the registry's CPU (on 2 cores the
// registry's ingest sets the pace, and its CPU varies less than the
// wall time), peak RSS, and the median of 5 re-installs.
//
//	go run ./bench/cmd/p7ab --bins OLD,NEW --bundle B.tar.zst --key cosign.pub
//
// Without the bundle, it generates the gzip workload of --size and builds
// it with NEW (the key's .key beside --key, password $COSIGN_PASSWORD).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

type sample struct {
	wall, cpu, registryCPU, rssMiB float64
}

func main() {
	bundle := flag.String("bundle", "", "bundle to push (built when missing)")
	pub := flag.String("key", "", "cosign public key")
	bins := flag.String("bins", "", "OLD,NEW p7bundle binaries")
	rounds := flag.Int("rounds", 8, "rounds")
	size := flag.String("size", "2G", "workload size when building the bundle")
	work := flag.String("work", filepath.Join(os.TempDir(), "p7ab"), "scratch directory")
	flag.Parse()
	names := strings.Split(*bins, ",")
	if len(names) != 2 || *bundle == "" || *pub == "" {
		log.Fatal("usage: p7ab --bins OLD,NEW --bundle B.tar.zst --key cosign.pub")
	}
	if _, err := os.Stat(*bundle); err != nil {
		n, err := workload.ParseSize(*size)
		if err != nil {
			log.Fatal(err)
		}
		if err := build(*bundle, *pub, names[1], n, *work); err != nil {
			log.Fatal(err)
		}
	}
	push, reinstall := map[string][]sample{}, map[string][]float64{}
	for r := range *rounds {
		order := names
		if r%2 == 1 {
			order = []string{names[1], names[0]}
		}
		for _, bin := range order {
			s, re, err := pushTwice(bin, *bundle, *pub, filepath.Join(*work, "site"))
			if err != nil {
				log.Fatal(err)
			}
			push[bin], reinstall[bin] = append(push[bin], s), append(reinstall[bin], re)
			fmt.Printf("round %d %s: push %.2f s, CPU %.2f s, registry CPU %.2f s, peak RSS %.1f MiB; re-install %.3f s\n",
				r+1, bin, s.wall, s.cpu, s.registryCPU, s.rssMiB, re)
		}
	}
	for _, bin := range names {
		m := func(f func(sample) float64) float64 {
			var x []float64
			for _, s := range push[bin] {
				x = append(x, f(s))
			}
			return median(x)
		}
		fmt.Printf("%s: medians push %.2f s, CPU %.2f s, registry CPU %.2f s, peak RSS %.1f MiB; re-install %.3f s\n", bin,
			m(func(s sample) float64 { return s.wall }), m(func(s sample) float64 { return s.cpu }),
			m(func(s sample) float64 { return s.registryCPU }), m(func(s sample) float64 { return s.rssMiB }), median(reinstall[bin]))
	}
}

// pushTwice pushes into an empty registry, then re-installs 5 times.
func pushTwice(bin, bundle, pub, dir string) (sample, float64, error) {
	reg, err := testregistry.Start(context.Background(), testregistry.Options{Dir: dir})
	if err != nil {
		return sample{}, 0, err
	}
	defer os.RemoveAll(dir)
	defer reg.Stop()
	args := []string{"push", bundle, "--key", pub, "--registry", reg.Host, "--plain-http", "--json"}
	before := cpuSeconds(reg.PID())
	s, err := run(bin, args...)
	if err != nil {
		return s, 0, err
	}
	s.registryCPU = cpuSeconds(reg.PID()) - before
	var re []float64
	for range 5 {
		r, err := run(bin, args...)
		if err != nil {
			return s, 0, err
		}
		re = append(re, r.wall)
	}
	return s, median(re), nil
}

func run(bin string, args ...string) (sample, error) {
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("%s %s: %v: %s", bin, args[0], err, stderr.String())
	}
	st := cmd.ProcessState
	return sample{
		wall:   time.Since(start).Seconds(),
		cpu:    (st.UserTime() + st.SystemTime()).Seconds(),
		rssMiB: float64(st.SysUsage().(*syscall.Rusage).Maxrss) / 1024,
	}, nil
}

// cpuSeconds is a running process's user+system CPU (/proc/PID/stat, in
// USER_HZ = 100 ticks a second on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var user, sys float64
	fmt.Sscan(f[11], &user)
	fmt.Sscan(f[12], &sys)
	return (user + sys) / 100
}

// build generates the gzip workload into a registry and builds it.
func build(bundle, pub, bin string, size int64, work string) error {
	ctx := context.Background()
	reg, err := testregistry.Start(ctx, testregistry.Options{Dir: filepath.Join(work, "source")})
	if err != nil {
		return err
	}
	defer reg.Stop()
	w := workload.PlanKind(1, size, workload.Gzip)
	if err := w.Generate(ctx, reg.Host, 2, func(int64, int64) {}); err != nil {
		return err
	}
	chart := filepath.Join(work, "chart")
	if err := w.WriteChart(chart); err != nil {
		return err
	}
	key := strings.TrimSuffix(pub, ".pub") + ".key"
	cmd := exec.Command(bin, "build", "--chart", chart, "--key", key, "-o", bundle,
		"--mirror", workload.SourceHost+"="+reg.Host, "--plain-http")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v: %s", err, out)
	}
	return nil
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	switch n := len(s); {
	case n == 0:
		return 0
	case n%2 == 0:
		return (s[n/2-1] + s[n/2]) / 2
	default:
		return s[n/2]
	}
}
