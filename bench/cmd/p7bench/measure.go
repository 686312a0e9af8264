package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sample is one timed run of one command.
type Sample struct {
	Wall      float64 `json:"wallSeconds"`
	User      float64 `json:"userSeconds"`
	Sys       float64 `json:"sysSeconds"`
	MaxRSSKiB int64   `json:"maxRSSKiB"`
	// RegistryCPU is CPU seconds the benchmark's own registries spent meanwhile.
	RegistryCPU float64 `json:"registryCPUSeconds"`
	// Background is the average number of cores busy with processes outside
	// the benchmark (other users of the machine) during the run.
	Background float64 `json:"backgroundCores"`
	// Kernel is the average number of cores busy in kernel threads (page
	// writeback, memory management), partly on the command's behalf.
	Kernel float64 `json:"kernelThreadCores"`
	// Disk, for commands watched by a diskWatch.
	Disk *DiskUse `json:"disk,omitempty"`
}

// DiskUse is what a watched command wrote to disk, beyond the registry storage.
type DiskUse struct {
	// OpenForWriteMax is the largest total size of regular files the process
	// tree had open for writing at any sample.
	OpenForWriteMax int64 `json:"openForWriteMaxBytes"`
	// ScratchMax is the largest size of its working and TMPDIR directory.
	ScratchMax int64 `json:"scratchMaxBytes"`
	// FilesystemMax is the largest drop of free space on the filesystem, less
	// the growth of the registry storage (noisy: other users share the disk).
	FilesystemMax int64 `json:"filesystemMaxBytes"`
	Samples       int   `json:"samples"`
}

// runner runs measured commands.
type runner struct {
	timeBin string // /usr/bin/time when present (peak RSS from its -v report), else rusage
	env     []string
	work    string
	log     func(format string, args ...any)

	mu         sync.Mutex
	registries map[int]bool // pids of the benchmark's registries, not background
}

// cmdSpec is one command to measure.
type cmdSpec struct {
	Argv   []string // or Script
	Script string   // run by bash -c with pipefail
	Dir    string
	Env    []string
	Stdout string // file receiving stdout; "" discards it
	// Watch samples disk use while the command runs.
	Watch *diskWatch
}

func (c cmdSpec) String() string {
	if c.Script != "" {
		return c.Script
	}
	return strings.Join(c.Argv, " ")
}

func (r *runner) addRegistry(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.registries == nil {
		r.registries = map[int]bool{}
	}
	r.registries[pid] = true
}

func (r *runner) removeRegistry(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.registries, pid)
}

func (r *runner) registryCPU() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t float64
	for pid := range r.registries {
		t += procCPU(pid)
	}
	return t
}

// run executes spec and measures it.
func (r *runner) run(ctx context.Context, spec cmdSpec) (Sample, error) {
	argv := spec.Argv
	if spec.Script != "" {
		argv = []string{"bash", "-c", "set -euo pipefail; " + spec.Script}
	}
	timeOut := ""
	if r.timeBin != "" {
		f, err := os.CreateTemp(r.work, "time-*.txt")
		if err != nil {
			return Sample{}, err
		}
		f.Close()
		timeOut = f.Name()
		defer os.Remove(timeOut)
		argv = append([]string{r.timeBin, "-v", "-o", timeOut}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = append(append(os.Environ(), r.env...), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &tailBuffer{b: &stderr, max: 8 << 10}
	if spec.Stdout != "" {
		f, err := os.Create(spec.Stdout)
		if err != nil {
			return Sample{}, err
		}
		defer f.Close()
		cmd.Stdout = f
	}
	if spec.Watch != nil {
		spec.Watch.exclude = map[string]bool{timeOut: true, spec.Stdout: true}
		spec.Watch.baseline()
	}
	busy0 := machineBusy()
	reg0 := r.registryCPU()
	kt0 := kernelThreadsCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Sample{}, err
	}
	var stopWatch func() *DiskUse
	if spec.Watch != nil {
		stopWatch = spec.Watch.start(cmd.Process.Pid)
	}
	err := cmd.Wait()
	wall := time.Since(start).Seconds()
	s := Sample{Wall: wall}
	if stopWatch != nil {
		s.Disk = stopWatch()
	}
	s.RegistryCPU = r.registryCPU() - reg0
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.User = tv(ru.Utime)
		s.Sys = tv(ru.Stime)
		s.MaxRSSKiB = ru.Maxrss
	}
	if timeOut != "" {
		if b, rerr := os.ReadFile(timeOut); rerr == nil {
			if v, ok := timeField(b, "Maximum resident set size (kbytes)"); ok {
				s.MaxRSSKiB = int64(v)
			}
			if v, ok := timeField(b, "User time (seconds)"); ok {
				s.User = v
			}
			if v, ok := timeField(b, "System time (seconds)"); ok {
				s.Sys = v
			}
		}
	}
	if busy := machineBusy() - busy0; wall > 0 {
		kt := kernelThreadsCPU() - kt0
		s.Kernel = kt / wall
		s.Background = max(0, (busy-s.User-s.Sys-s.RegistryCPU-kt)/wall)
	}
	if err != nil {
		return s, fmt.Errorf("%s: %v\n%s", spec, err, strings.TrimSpace(stderr.String()))
	}
	return s, nil
}

// runFunc measures fn, run in this process (CPU from RUSAGE_SELF; no peak RSS).
func (r *runner) runFunc(fn func() error) (Sample, error) {
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	busy0, reg0, kt0 := machineBusy(), r.registryCPU(), kernelThreadsCPU()
	start := time.Now()
	err := fn()
	s := Sample{Wall: time.Since(start).Seconds()}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	s.User, s.Sys = tv(ru1.Utime)-tv(ru0.Utime), tv(ru1.Stime)-tv(ru0.Stime)
	s.RegistryCPU = r.registryCPU() - reg0
	if s.Wall > 0 {
		kt := kernelThreadsCPU() - kt0
		s.Kernel = kt / s.Wall
		s.Background = max(0, (machineBusy()-busy0-s.User-s.Sys-s.RegistryCPU-kt)/s.Wall)
	}
	return s, err
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func timeField(b []byte, key string) (float64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, key+":") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, key+":")), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	b   *bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 2*t.max {
		keep := append([]byte(nil), t.b.Bytes()[t.b.Len()-t.max:]...)
		t.b.Reset()
		t.b.Write(keep)
	}
	return len(p), nil
}

const userHZ = 100 // USER_HZ on Linux

// machineBusy is the CPU seconds all cores spent busy since boot.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	// user nice system idle iowait irq softirq steal
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		busy += v
	}
	return busy / userHZ
}

// kernelThreadsCPU is the CPU seconds all kernel threads have used.
func kernelThreadsCPU() float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total float64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// f[1] is the parent: kthreadd (2) or kthreadd itself.
		if len(f) < 13 || (f[1] != "2" && pid != 2) {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		total += (u + s) / userHZ
	}
	return total
}

// procCPU is the CPU seconds of pid (utime + stime).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / userHZ
}

// diskWatch samples, while a command runs, the files its process tree has
// open for writing, the size of its scratch directory and the free space of
// the filesystem (less the registry storage's growth).
type diskWatch struct {
	Scratch  string // working dir / TMPDIR of the command
	Registry string // registry storage dir, excluded
	Interval time.Duration
	// exclude are files the harness itself opened for the command (its
	// stdout file, the /usr/bin/time report).
	exclude map[string]bool
	// free0 and reg0 are the free space and the registry storage's size
	// before the command, taken before it starts so as not to compete with it.
	free0, reg0 int64
}

func (w *diskWatch) baseline() {
	w.free0, w.reg0 = freeBytes(w.Registry), dirSize(w.Registry)
}

func (w *diskWatch) start(rootPid int) func() *DiskUse {
	res := &DiskUse{}
	stop := make(chan struct{})
	done := make(chan struct{})
	free0, reg0 := w.free0, w.reg0
	sample := func() {
		var open int64
		for _, pid := range processTree(rootPid) {
			open += openForWrite(pid, w.exclude)
		}
		res.OpenForWriteMax = max(res.OpenForWriteMax, open)
		if w.Scratch != "" {
			res.ScratchMax = max(res.ScratchMax, dirSize(w.Scratch))
		}
		if w.Registry != "" {
			fsDelta := (free0 - freeBytes(w.Registry)) - (dirSize(w.Registry) - reg0)
			res.FilesystemMax = max(res.FilesystemMax, fsDelta)
		}
		res.Samples++
	}
	go func() {
		defer close(done)
		iv := w.Interval
		if iv == 0 {
			iv = 100 * time.Millisecond
		}
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() *DiskUse {
		close(stop)
		<-done
		return res
	}
}

// processTree lists pid and its descendants.
func processTree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// openForWrite sums the sizes of regular files pid has open for writing
// (deleted temporary files included).
func openForWrite(pid int, exclude map[string]bool) int64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, fd := range fds {
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		var flags int64 = -1
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags < 0 || flags&syscall.O_ACCMODE == syscall.O_RDONLY {
			continue
		}
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && exclude[target] {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, fd.Name()))
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		total += st.Size()
	}
	return total
}

func freeBytes(path string) int64 {
	if path == "" {
		return 0
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// dirSize is the allocated size of the files under dir.
func dirSize(dir string) int64 {
	if dir == "" {
		return 0
	}
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					total += st.Blocks * 512
				} else {
					total += info.Size()
				}
			}
		}
		return nil
	})
	return total
}
