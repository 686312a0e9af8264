// Command p7prof runs p7bundle's build, push and verify in-process on the
// benchmark workload and writes a CPU profile, a heap profile taken near the
// peak of the heap, and a memory trace for each, so that a missed target of
// `make bench` can be explained. `make bench-profile` runs it; read the
// profiles with `go tool pprof -top PROFILE` (the binary is not needed).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/builder"
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/mirror"
)

func main() {
	size := flag.String("size", envOr("BENCH_SIZE", "2G"), "workload size: 64M, 2G, …")
	out := flag.String("out", ".cache/bench/profile", "directory for the profiles")
	seed := flag.Uint64("seed", 1, "workload seed")
	kind := flag.String("workload", "raw", "raw (uncompressed tar layers) or gzip (gzip layers, as docker push stores them)")
	flag.Parse()
	n, err := workload.ParseSize(*size)
	if err != nil {
		fatal(err)
	}
	k, err := workload.ParseKind(*kind)
	if err != nil {
		fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, n, *seed, k, *out); err != nil {
		fatal(err)
	}
}

func run(ctx context.Context, size int64, seed uint64, kind workload.Kind, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	out, _ = filepath.Abs(out)
	work, err := os.MkdirTemp("", "p7prof-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	src, err := testregistry.Start(ctx, testregistry.Options{Dir: filepath.Join(work, "source")})
	if err != nil {
		return err
	}
	defer src.Stop()
	w := workload.PlanKind(seed, size, kind)
	logf("generating %d bytes of %s workload", size, kind)
	if err := w.Generate(ctx, src.Host, 2, nil); err != nil {
		return err
	}
	chart := filepath.Join(work, "chart")
	if err := w.WriteChart(chart); err != nil {
		return err
	}
	password := []byte("p7prof-throwaway")
	keyPath, pubPath, err := bundle.GenerateKeyPair(filepath.Join(work, "cosign"), password)
	if err != nil {
		return err
	}
	bundlePath := filepath.Join(work, "bundle.tar.zst")

	report := map[string]any{}
	err = profile(out, "build", report, func() error {
		_, err := (&builder.Build{
			Chart: chart, Output: bundlePath, KeyPath: keyPath, KeyPassword: password,
			Registry: mirror.RegistryOptions{Mirrors: map[string]string{workload.SourceHost: src.Host}, PlainHTTP: true},
			Jobs:     4, ToolVersion: "p7prof",
		}).Run(ctx)
		return err
	})
	if err != nil {
		return err
	}
	src.Stop()
	site, err := testregistry.Start(ctx, testregistry.Options{Dir: filepath.Join(work, "site")})
	if err != nil {
		return err
	}
	defer site.Stop()
	push := func() error {
		res, err := (&installer.Push{Bundle: bundlePath, Signature: installer.Signature{Key: pubPath},
			Site: installer.SiteRegistry{Host: site.Host, PlainHTTP: true}, Jobs: 4}).Run(ctx)
		if err == nil {
			logf("  pushed %d blobs (%d bytes), skipped %d", res.BlobsPushed, res.BytesPushed, res.BlobsSkipped)
		}
		return err
	}
	if err := profile(out, "push", report, push); err != nil {
		return err
	}
	if err := profile(out, "repush", report, push); err != nil {
		return err
	}
	err = profile(out, "verify", report, func() error {
		v, err := bundle.LoadVerifier(context.Background(), pubPath)
		if err != nil {
			return err
		}
		_, err = bundle.Verify(ctx, bundlePath, bundle.VerifyOptions{Verifier: v})
		return err
	})
	if err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(report, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "summary.json"), raw, 0o644); err != nil {
		return err
	}
	logf("profiles in %s: go tool pprof -top %s", out, filepath.Join(out, "build.cpu.pprof"))
	return nil
}

// profile runs fn under the CPU profiler, keeps a heap profile of the
// largest heap seen (sampled every 100 ms) and records the memory trace.
func profile(dir, name string, report map[string]any, fn func() error) error {
	runtime.GC()
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		return err
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	var mu sync.Mutex
	var trace []string
	var peakHeap, peakSys uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last := time.Time{}
		lastCPU := selfCPU()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			mu.Lock()
			if ms.HeapInuse > peakHeap*11/10 {
				peakHeap = ms.HeapInuse
				writeHeap(filepath.Join(dir, name+".heap.pprof"))
			}
			peakSys = max(peakSys, ms.Sys)
			if el := time.Since(last); el > time.Second {
				c := selfCPU()
				cores := (c - lastCPU) / el.Seconds()
				if last.IsZero() {
					cores = 0
				}
				last, lastCPU = time.Now(), c
				trace = append(trace, fmt.Sprintf("%5.1fs cpu=%.2f cores heapInuse=%dMiB heapSys=%dMiB sys=%dMiB rss=%dMiB",
					time.Since(start).Seconds(), cores, ms.HeapInuse>>20, ms.HeapSys>>20, ms.Sys>>20, rssKiB()>>10))
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	err = fn()
	elapsed := time.Since(start)
	close(stop)
	<-done
	pprof.StopCPUProfile()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	user := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano())
	sys := time.Duration(ru1.Stime.Nano() - ru0.Stime.Nano())
	faults := ru1.Minflt - ru0.Minflt
	report[name] = map[string]any{"seconds": elapsed.Seconds(), "peakHeapInuseMiB": peakHeap >> 20,
		"peakSysMiB": peakSys >> 20, "userSeconds": user.Seconds(), "sysSeconds": sys.Seconds(),
		"minorFaults": faults, "trace": trace}
	os.WriteFile(filepath.Join(dir, name+".mem.txt"), []byte(strings.Join(trace, "\n")+"\n"), 0o644)
	logf("%s: %.1fs (user %.1fs, sys %.1fs, %d minor page faults), peak heap in use %d MiB, runtime sys %d MiB",
		name, elapsed.Seconds(), user.Seconds(), sys.Seconds(), faults, peakHeap>>20, peakSys>>20)
	return err
}

func writeHeap(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	pprof.Lookup("heap").WriteTo(f, 0)
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// rssKiB is this process's resident set (VmRSS).
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "p7prof: "+format+"\n", args...)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "p7prof:", err)
	os.Exit(1)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
