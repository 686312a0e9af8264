package testsite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// stateRoot holds one JSON file per live site and the lock files. It is
// well known so that a run after a crash can find and remove what the
// crashed run left behind.
const stateRoot = "/run/p7bundle-testsite"

// state is everything teardown needs, written before each step that creates
// something, so even a site whose owner died halfway can be removed.
type state struct {
	Name      string       `json:"name"` // network namespace
	Owner     procRecord   `json:"owner"`
	Dir       string       `json:"dir"`
	RemoveDir bool         `json:"removeDir"`
	Full      bool         `json:"full"`
	NetNSID   string       `json:"netnsID,omitempty"` // e.g. "net:[4026532281]"
	MntNSID   string       `json:"mntnsID,omitempty"`
	Procs     []procRecord `json:"procs,omitempty"`
	// HostDirs were created outside Dir (mount points); removed in reverse.
	HostDirs []string `json:"hostDirs,omitempty"`
	// Sysctls are the values before the kubelet started.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

func statePath(name string) string { return filepath.Join(stateRoot, "sites", name+".json") }

func (st *state) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	p := statePath(st.Name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// lockFile takes an exclusive flock on path, waiting until ctx is done. The
// kernel drops the lock when the holder dies, so a crash never leaves it held.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("testsite: waiting for %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func unlockFile(f *os.File) {
	if f != nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// cleanStale tears down every site whose owner process is gone.
func cleanStale(ctx context.Context) error {
	l, err := lockFile(ctx, filepath.Join(stateRoot, "stale.lock"))
	if err != nil {
		return err
	}
	defer unlockFile(l)
	files, _ := filepath.Glob(statePath("*"))
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st state
		if err := json.Unmarshal(b, &st); err != nil || st.Name == "" {
			errs = append(errs, fmt.Errorf("testsite: unreadable state %s (remove it by hand): %v", f, err))
			continue
		}
		if st.Owner.alive() {
			continue
		}
		if err := st.teardown(0); err != nil {
			errs = append(errs, fmt.Errorf("testsite: cleaning stale site %s: %w", st.Name, err))
			continue
		}
		os.Remove(f)
	}
	return errors.Join(errs...)
}

// teardown stops everything the site started and removes what it created,
// in an order that keeps the kubelet from undoing it. grace is how long
// processes get after SIGTERM (0 for a dead owner's leftovers).
func (st *state) teardown(grace time.Duration) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// In order: the kubelet (or it restarts containers), the containers
	// (while their shims still run, so the shims reap them), the API's
	// clients and the API (while etcd still runs: without it kube-apiserver
	// takes minutes to exit), then the rest.
	phase := func(names ...string) []procRecord {
		return slices.DeleteFunc(slices.Clone(st.Procs), func(r procRecord) bool { return !slices.Contains(names, r.Name) })
	}
	add(stopAll(phase("kubelet"), grace))
	if st.Full {
		add(killPods(10 * time.Second))
	}
	add(stopAll(phase("kube-scheduler", "kube-controller-manager", "kube-apiserver"), grace))
	add(stopAll(slices.DeleteFunc(slices.Clone(st.Procs), func(r procRecord) bool { return r.Name == "holder" }), grace))
	add(stopAll(phase("holder"), grace))

	netnsID := st.NetNSID
	if fi, err := os.Stat(netnsPath(st.Name)); err == nil && netnsID == "" {
		netnsID = fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino)
	}
	add(sweepAll(netnsID, st.MntNSID))
	if st.Full {
		add(removeCgroups())
		if st.Sysctls != nil {
			add(writeSysctls(st.Sysctls))
		}
	}
	add(netnsDelete(st.Name))
	for _, d := range slices.Backward(st.HostDirs) {
		add(removeHostDir(d))
	}
	if st.RemoveDir {
		add(os.RemoveAll(st.Dir))
	}
	return errors.Join(errs...)
}

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// runNetnsMarker records that a site created /run/netns (ip netns add mounts
// it on itself), so the last site to go removes it again.
var runNetnsMarker = filepath.Join(stateRoot, "created-run-netns")

// netnsLock serialises ip netns add/delete with the /run/netns cleanup.
var netnsLock = filepath.Join(stateRoot, "netns.lock")

func netnsAdd(ctx context.Context, name string) error {
	l, err := lockFile(ctx, netnsLock)
	if err != nil {
		return err
	}
	defer unlockFile(l)
	if _, err := os.Stat("/run/netns"); os.IsNotExist(err) {
		if err := os.WriteFile(runNetnsMarker, nil, 0o644); err != nil {
			return err
		}
	}
	return run(ctx, "ip", "netns", "add", name)
}

func netnsDelete(name string) error {
	l, err := lockFile(context.Background(), netnsLock)
	if err != nil {
		return err
	}
	defer unlockFile(l)
	if _, err := os.Stat(netnsPath(name)); err == nil {
		if err := run(context.Background(), "ip", "netns", "delete", name); err != nil {
			return err
		}
	}
	if _, err := os.Stat(runNetnsMarker); err != nil {
		return nil
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil && len(entries) > 0 {
		return nil // another site still uses it
	}
	for syscall.Unmount("/run/netns", 0) == nil {
	}
	if err := os.Remove("/run/netns"); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.Remove(runNetnsMarker)
}

// run executes a short host-side command, returning its output on failure.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sweepAll kills what is left in the namespaces until nothing is: a shim
// killed mid-operation may have forked a runc after the last scan, and
// that runc, once the site's tmpfs is gone, writes to the host's /run.
func sweepAll(ids ...string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := sweep(ids...)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testsite: %d processes keep appearing in the site's namespaces", len(left))
		}
		if err := stopAll(left, 0); err != nil {
			return err
		}
	}
}

// removeHostDir removes a directory the site created on the host. Empty
// directories below it (a runc state root, say) go too; a file is an error.
func removeHostDir(dir string) error {
	err := os.Remove(dir)
	if err == nil || os.IsNotExist(err) {
		return nil
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) > 0 {
		return fmt.Errorf("testsite: remove %s: holds %v", dir, files)
	}
	return os.RemoveAll(dir)
}
