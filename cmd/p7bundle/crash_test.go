package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/internal/testing/faultproxy"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// startCLI runs p7bundle as a separate process (this test binary).
func startCLI(t *testing.T, stdin string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), asCLI+"=1", "COSIGN_PASSWORD="+testKeyPassword)
	cmd.Stdin = strings.NewReader(stdin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// killWhen SIGKILLs cmd once ready() holds (or it exits); it reports
// whether the process was killed mid-work.
func killWhen(cmd *exec.Cmd, ready func() bool) bool {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case <-done:
			return false
		case <-time.After(2 * time.Millisecond):
			if ready() {
				cmd.Process.Signal(syscall.SIGKILL)
				<-done
				return true
			}
		}
	}
}

// TestCrashAndRerun kills build and push with SIGKILL part-way, several
// times, and checks that nothing is left at the output path and that the
// rerun finishes while transferring less than a full run.
func TestCrashAndRerun(t *testing.T) {
	s := startSite(t)
	slow, err := faultproxy.Start(faultproxy.Options{Target: s.up.URL(), Transport: s.up.HTTPClient().Transport, Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	buildArgs := func(out, cache string) []string {
		return []string{"build", "--chart", testenv.FixtureChart(), "--key", s.key, "-o", out, "--cache-dir", cache,
			"--mirror", "registry.pseven.io=" + slow.Host, "--plain-http", "--username", s.up.Username, "--password-stdin", "--jobs", "1"}
	}
	// A full run's traffic, for comparison.
	ref := filepath.Join(s.dir, "ref.tar.zst")
	if r := p7(t, s.up.Password+"\n", buildArgs(ref, filepath.Join(s.dir, "ref-cache"))...); r.code != 0 {
		t.Fatalf("reference build: %v", r)
	}
	full := slow.BytesOut.Load()

	// Kill after k blobs are safely in the cache: work is kept per finished
	// blob, so the rerun must fetch at most what was not finished.
	for trial, k := range []int{1, 2, 4, 8, 16} {
		out := filepath.Join(s.dir, "crash.tar.zst")
		cache := filepath.Join(s.dir, "cache-"+strconv.Itoa(trial))
		var done int64
		killed := killWhen(startCLI(t, s.up.Password+"\n", buildArgs(out, cache)...), func() bool {
			n, size := finishedBlobs(filepath.Join(cache, "blobs", "sha256"))
			done = size
			return n >= k
		})
		if _, err := os.Stat(out); killed && err == nil {
			t.Fatalf("trial %d: %s exists after SIGKILL", trial, out)
		}
		before := slow.BytesOut.Load()
		if r := p7(t, s.up.Password+"\n", buildArgs(out, cache)...); r.code != 0 {
			t.Fatalf("trial %d: rerun after SIGKILL: %v", trial, r)
		}
		rerun := slow.BytesOut.Load() - before
		t.Logf("build trial %d: killed=%v after %d blobs (%d bytes) were cached; rerun fetched %d of a full run's %d bytes", trial, killed, k, done, rerun, full)
		if killed && rerun > full-done+64<<10 {
			t.Errorf("trial %d: rerun fetched %d bytes, more than the %d not yet cached", trial, rerun, full-done)
		}
		if a, b := sha256File(t, ref), sha256File(t, out); a != b {
			t.Errorf("trial %d: rerun bundle %s differs from the reference %s", trial, b, a)
		}
		if r := p7(t, "", "verify", out, "--key", s.pub); r.code != 0 {
			t.Fatalf("trial %d: verify: %v", trial, r)
		}
		os.Remove(out)
	}

	// Push: a fresh site registry per trial behind a slow proxy counting uploads.
	var regDir string
	front := func() (*faultproxy.Proxy, []string, func() []string) {
		reg := startSiteRegistry(t)
		regDir = reg.Dir
		p, err := faultproxy.Start(faultproxy.Options{Target: reg.URL(), Transport: reg.HTTPClient().Transport, Delay: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		args := []string{"push", ref, "--key", s.pub, "--registry", p.Host, "--plain-http",
			"--registry-username", reg.Username, "--registry-password-stdin", "--jobs", "1"}
		return p, append(args, "\x00"+reg.Password), func() []string { return allTags(t, reg) }
	}
	split := func(args []string) ([]string, string) {
		return args[:len(args)-1], strings.TrimPrefix(args[len(args)-1], "\x00") + "\n"
	}
	refProxy, refArgs, refTags := front()
	args, stdin := split(refArgs)
	if r := p7(t, stdin, args...); r.code != 0 {
		t.Fatalf("reference push: %v", r)
	}
	fullPush := refProxy.BytesIn.Load()
	for trial, k := range []int{1, 3, 8} {
		proxy, pargs, tags := front()
		args, stdin := split(pargs)
		var done int64
		killed := killWhen(startCLI(t, stdin, args...), func() bool {
			n, size := finishedBlobs(regDir)
			done = size
			return n >= k
		})
		if killed && len(tags()) != 0 {
			t.Errorf("push trial %d: killed before the end, yet tags exist: %v", trial, tags())
		}
		before := proxy.BytesIn.Load()
		if r := p7(t, stdin, args...); r.code != 0 {
			t.Fatalf("push trial %d: rerun: %v", trial, r)
		}
		rerun := proxy.BytesIn.Load() - before
		t.Logf("push trial %d: killed=%v after %d blobs (%d bytes) were stored; rerun uploaded %d of a full push's %d bytes", trial, killed, k, done, rerun, fullPush)
		if killed && rerun > fullPush-done+64<<10 {
			t.Errorf("push trial %d: rerun uploaded %d bytes, more than the %d not yet stored", trial, rerun, fullPush-done)
		}
		if strings.Join(tags(), " ") != strings.Join(refTags(), " ") {
			t.Errorf("push trial %d: registry has %v, a clean push %v", trial, tags(), refTags())
		}
	}
}

// finishedBlobs counts complete blob files under dir: a p7bundle cache
// (blobs/sha256/<hex>) or a registry's storage (.../<hex>/data).
func finishedBlobs(dir string) (n int, size int64) {
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		name := filepath.Base(p)
		if (len(name) == 64 && !strings.Contains(p, "ingest")) || (name == "data" && strings.Contains(p, "/blobs/sha256/")) {
			n++
			size += info.Size()
		}
		return nil
	})
	return n, size
}
