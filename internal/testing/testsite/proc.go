package testsite

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procRecord names a process the site started. Start (the starttime field of
// /proc/PID/stat) guards against PID reuse: a record from a crashed run never
// matches an unrelated process that got the same PID later.
type procRecord struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// procStat returns the starttime and state of pid.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	return start, f[0][0], err
}

func recordOf(name string, pid int) (procRecord, error) {
	start, _, err := procStat(pid)
	return procRecord{Name: name, PID: pid, Start: start}, err
}

// alive reports whether the recorded process still runs. Zombies count as
// gone: they hold no resources, and orphans are never reaped on hosts whose
// PID 1 does not reap (such as these CI machines).
func (r procRecord) alive() bool {
	start, state, err := procStat(r.PID)
	return err == nil && start == r.Start && state != 'Z'
}

func (r procRecord) signal(sig syscall.Signal) {
	if r.alive() {
		syscall.Kill(r.PID, sig)
	}
}

// stopAll sends SIGTERM to every live process, waits up to grace, then sends
// SIGKILL to the rest and waits for them to vanish.
func stopAll(recs []procRecord, grace time.Duration) error {
	for _, r := range recs {
		r.signal(syscall.SIGTERM)
	}
	left := waitGone(recs, grace)
	for _, r := range left {
		r.signal(syscall.SIGKILL)
	}
	var errs []error
	for _, r := range waitGone(left, 10*time.Second) {
		errs = append(errs, fmt.Errorf("testsite: %s (pid %d) survived SIGKILL", r.Name, r.PID))
	}
	return errors.Join(errs...)
}

// waitGone polls until every process exited or timeout passed, and returns
// the ones still alive.
func waitGone(recs []procRecord, timeout time.Duration) []procRecord {
	deadline := time.Now().Add(timeout)
	for {
		recs = slices.DeleteFunc(slices.Clone(recs), func(r procRecord) bool { return !r.alive() })
		if len(recs) == 0 || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nsID returns the namespace identity of pid, e.g. "net:[4026532281]".
func nsID(pid int, ns string) string {
	id, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	return id
}

// sweep lists every process (other than this one) inside any of the given
// namespaces: what the site left behind that it did not start itself, such
// as containerd shims or commands run with Site.Command.
func sweep(ids ...string) []procRecord {
	ids = slices.DeleteFunc(ids, func(s string) bool { return s == "" })
	if len(ids) == 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []procRecord
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if slices.Contains(ids, nsID(pid, "net")) || slices.Contains(ids, nsID(pid, "mnt")) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if r, err := recordOf(strings.TrimSpace(string(comm)), pid); err == nil && r.alive() {
				out = append(out, r)
			}
		}
	}
	return out
}

// kubepodsTrees are the cgroup trees the kubelet creates for pods (cgroupfs
// driver, cgroupRoot "/"), one per mounted v1 hierarchy plus the v2 root.
func kubepodsTrees() []string {
	trees, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		trees = append(trees, "/sys/fs/cgroup/kubepods")
	}
	return trees
}

func cgroupDirs(tree string) []string {
	var dirs []string
	filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs
}

// killPods SIGKILLs every process in the pod cgroups until none is left. The
// kubelet must be stopped first or it restarts the containers.
func killPods(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, tree := range kubepodsTrees() {
			for _, d := range cgroupDirs(tree) {
				b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
						syscall.Kill(pid, syscall.SIGKILL)
						n++
					}
				}
			}
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testsite: %d processes left in the kubepods cgroups", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroups removes the (empty) pod cgroup trees, deepest first.
func removeCgroups() error {
	var errs []error
	for _, tree := range kubepodsTrees() {
		dirs := cgroupDirs(tree)
		slices.Reverse(dirs)
		for _, d := range dirs {
			var err error
			for range 50 { // a cgroup stays busy briefly after its last task exits
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("testsite: rmdir %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// kubeletSysctls are the global (not per network namespace) sysctls the
// kubelet sets at start (pkg/kubelet/cm setupKernelTunables).
var kubeletSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
}

func sysctlPath(key string) string {
	return "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
}

func readSysctls(keys []string) (map[string]string, error) {
	m := map[string]string{}
	for _, k := range keys {
		b, err := os.ReadFile(sysctlPath(k))
		if err != nil {
			return nil, err
		}
		m[k] = strings.TrimSpace(string(b))
	}
	return m, nil
}

func writeSysctls(m map[string]string) error {
	var errs []error
	for k, v := range m {
		if err := os.WriteFile(sysctlPath(k), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("testsite: restore %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}
