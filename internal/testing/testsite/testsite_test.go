package testsite

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testMode selects what a re-executed test binary does (see TestMain).
const testMode = "P7BUNDLE_TESTSITE_TEST_MODE"

func TestMain(m *testing.M) {
	switch os.Getenv(testMode) {
	case "":
		os.Exit(m.Run())
	case "dial": // inside the site: try each address, report error and duration
		os.Exit(dialMain(os.Args[1:]))
	case "get": // inside the site: GET a URL, print the body
		resp, err := http.Get(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(os.Stdout, resp.Body)
		os.Exit(0)
	case "crash": // start a full site with a pod, then wait to be killed
		os.Exit(crashMain())
	}
}

func start(t *testing.T, opts Options) (*Site, time.Duration) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Kubernetes site (skipped with -short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts.Logf = t.Logf
	t0 := time.Now()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s, time.Since(t0)
}

func kubectl(t *testing.T, s *Site, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := s.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func apply(t *testing.T, s *Site, manifest string) {
	t.Helper()
	cmd := s.Command(context.Background(), "kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

const helloImage = "p7test/hello:1"

// deployHello pushes the fixture image into the site registry and runs it as
// a Pod that pulls it with an imagePullSecret, as an installer would.
func deployHello(t *testing.T, s *Site) {
	t.Helper()
	digests, err := s.PushImages(context.Background(), []string{helloImage})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(digests[helloImage], "sha256:") {
		t.Fatalf("digests = %v", digests)
	}
	kubectl(t, s, "create", "secret", "docker-registry", "regcred", "--docker-server="+s.Registry,
		"--docker-username="+s.RegistryUsername, "--docker-password="+s.RegistryPassword)
	apply(t, s, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  imagePullSecrets: [{name: regcred}]
  terminationGracePeriodSeconds: 1
  containers:
  - {name: hello, image: %s/%s, imagePullPolicy: Always}
`, s.Registry, helloImage))
	kubectl(t, s, "wait", "--for=condition=Ready", "pod/hello", "--timeout=120s")
}

// pullSecretRequired proves that containerd holds no registry credentials of
// its own, so a test that installs pods proves their imagePullSecrets: a
// Pod without imagePullSecrets fails to pull a site image with an auth
// error, the same Pod with a pull secret of the site credentials runs.
func pullSecretRequired(t *testing.T, s *Site) {
	conf, err := os.ReadFile(s.path("containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c := string(conf); strings.Contains(c, s.RegistryPassword) || strings.Contains(c, ".auth]") {
		t.Errorf("containerd config carries registry credentials:\n%s", c)
	}

	const image = "p7test/secret-only:1" // never pulled on this node before
	if _, err := s.PushImages(context.Background(), []string{image}); err != nil {
		t.Fatal(err)
	}
	pod := func(secret string) string {
		m := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: pull-auth}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: %s/%s, imagePullPolicy: Always}
`, s.Registry, image)
		if secret != "" {
			m += "  imagePullSecrets: [{name: " + secret + "}]\n"
		}
		return m
	}

	// Without imagePullSecrets: an auth error within 30 s, never Running.
	t0 := time.Now()
	apply(t, s, pod(""))
	var reason, msg string
	for {
		out := kubectl(t, s, "get", "pod", "pull-auth", "-o", `jsonpath={.status.containerStatuses[0].state.running.startedAt}{"|"}`+
			`{.status.containerStatuses[0].state.waiting.reason}{"|"}{.status.containerStatuses[0].state.waiting.message}`)
		f := strings.SplitN(out, "|", 3)
		if len(f) == 3 && f[0] != "" {
			t.Fatalf("pod without imagePullSecrets is running (started %s): containerd pulled without credentials", f[0])
		}
		if len(f) == 3 && (f[1] == "ErrImagePull" || f[1] == "ImagePullBackOff") {
			reason, msg = f[1], f[2]
			break
		}
		if time.Since(t0) > 30*time.Second {
			t.Fatalf("pod without imagePullSecrets: no pull error after 30s; state %q\n%s", out,
				kubectl(t, s, "get", "events", "--field-selector", "involvedObject.name=pull-auth"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	took := time.Since(t0)
	events := kubectl(t, s, "get", "events", "--field-selector", "involvedObject.name=pull-auth,reason=Failed",
		"-o", "jsonpath={.items[*].message}")
	t.Logf("without imagePullSecrets: %s after %.1fs: %s", reason, took.Seconds(), msg)
	if all := strings.ToLower(msg + "\n" + events); !strings.Contains(all, "401 unauthorized") {
		t.Errorf("pull failed, but not for want of credentials:\nstatus: %s\nevents: %s", msg, events)
	}

	// The same Pod with a pull secret of the site credentials runs.
	kubectl(t, s, "create", "secret", "docker-registry", "pull-auth", "--docker-server="+s.Registry,
		"--docker-username="+s.RegistryUsername, "--docker-password="+s.RegistryPassword)
	kubectl(t, s, "delete", "pod", "pull-auth", "--wait=true", "--timeout=60s")
	t0 = time.Now()
	apply(t, s, pod("pull-auth"))
	kubectl(t, s, "wait", "--for=condition=Ready", "pod/pull-auth", "--timeout=120s")
	t.Logf("with imagePullSecrets: Running after %.1fs", time.Since(t0).Seconds())
	kubectl(t, s, "delete", "pod", "pull-auth", "--wait=false")
}

func runJob(t *testing.T, s *Site) {
	t.Helper()
	apply(t, s, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  backoffLimit: 0
  template:
    spec:
      imagePullSecrets: [{name: regcred}]
      restartPolicy: Never
      containers:
      - {name: once, image: %s/%s, args: [once]}
`, s.Registry, helloImage))
	kubectl(t, s, "wait", "--for=condition=Complete", "job/once", "--timeout=120s")
	if logs := kubectl(t, s, "logs", "job/once"); !strings.Contains(logs, "p7fixture hello started") {
		t.Errorf("job logs = %q", logs)
	}
}

// hostSnapshot is the host state a full site changes while it runs and must
// restore. Other processes (go test runs other packages, other developers'
// runs) may run full sites too, so it is only read under the full-site lock.
type hostSnapshot struct {
	sysctls  map[string]string
	paths    map[string]bool
	kubepods []string
}

var hostPaths = []string{"/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/etc/cni", "/opt/cni"}

func snapshot(t *testing.T) hostSnapshot {
	t.Helper()
	var snap hostSnapshot
	underFullLock(t, func() { snap = readSnapshot(t) })
	return snap
}

func underFullLock(t *testing.T, f func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := lockFile(ctx, fullLock)
	if err != nil {
		t.Fatal(err)
	}
	defer unlockFile(l)
	f()
}

func readSnapshot(t *testing.T) hostSnapshot {
	t.Helper()
	keys := slices.Clone(kubeletSysctls)
	keys = append(keys, "net.ipv4.ip_forward")
	if _, err := os.Stat(sysctlPath("net.bridge.bridge-nf-call-iptables")); err == nil {
		keys = append(keys, "net.bridge.bridge-nf-call-iptables")
	}
	sc, err := readSysctls(keys)
	if err != nil {
		t.Fatal(err)
	}
	snap := hostSnapshot{sysctls: sc, paths: map[string]bool{}, kubepods: kubepodsTrees()}
	for _, p := range hostPaths {
		_, err := os.Stat(p)
		snap.paths[p] = err == nil
	}
	return snap
}

func hostLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, strings.TrimSuffix(f[1], ":"))
		}
	}
	return links
}

// hostMounts lists the host's mount points under any of the prefixes.
func hostMounts(prefixes ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 {
			for _, p := range prefixes {
				if fs[4] == p || strings.HasPrefix(fs[4], p+"/") {
					out = append(out, fs[4])
				}
			}
		}
	}
	return out
}

// siteProcs is every process of the site: those it started, those in its
// namespaces, and, for a full site, the containers in the pod cgroups.
func siteProcs(s *Site) []procRecord {
	s.mu.Lock()
	procs := slices.Clone(s.st.Procs)
	ids := []string{s.st.NetNSID, s.st.MntNSID}
	full := s.st.Full
	s.mu.Unlock()
	for _, r := range sweep(ids...) {
		if !slices.ContainsFunc(procs, func(p procRecord) bool { return p.PID == r.PID }) {
			procs = append(procs, r)
		}
	}
	// The pod cgroups belong to the one full site that may run at a time
	// (fullLock); a control-plane-only site running beside it owns none.
	if !full {
		return procs
	}
	for _, tree := range kubepodsTrees() {
		for _, d := range cgroupDirs(tree) {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				if r, err := recordOf("pod", pid); err == nil && !slices.ContainsFunc(procs, func(p procRecord) bool { return p.PID == pid }) {
					procs = append(procs, r)
				}
			}
		}
	}
	return procs
}

func rssMiB(procs []procRecord) float64 {
	var kb int
	for _, p := range procs {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				kb += n
			}
		}
	}
	return float64(kb) / 1024
}

// stopAndCheck stops the site and proves (d): nothing of it is left. For a
// full site, before is the host state to compare with.
func stopAndCheck(t *testing.T, s *Site, before *hostSnapshot) {
	t.Helper()
	procs := siteProcs(s)
	links := hostLinks(t)
	hadRunNetns := fileExists(runNetnsMarker)
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	checkGone(t, s.NetNS, s.Dir, procs)
	// Reaped, too: the test process reaps the daemons, the reaper the
	// containerd shims, the shims the containers.
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range procs {
		for zombie(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if zombie(p) {
			t.Errorf("%s (pid %d) is a zombie", p.Name, p.PID)
		}
	}
	if after := hostLinks(t); !slices.Equal(after, links) {
		t.Errorf("host links changed: %v -> %v", links, after)
	}
	// /run/netns goes with the last site if a site created it.
	if l, err := lockFile(context.Background(), netnsLock); err == nil {
		if entries, err := os.ReadDir("/run/netns"); hadRunNetns && err == nil && len(entries) == 0 {
			t.Errorf("/run/netns left behind")
		}
		unlockFile(l)
	}
	if before != nil {
		underFullLock(t, func() {
			after := readSnapshot(t)
			for k, v := range before.sysctls {
				if after.sysctls[k] != v {
					t.Errorf("sysctl %s = %s, was %s", k, after.sysctls[k], v)
				}
			}
			for p, existed := range before.paths {
				if after.paths[p] != existed {
					t.Errorf("%s: existed %v before, %v after", p, existed, after.paths[p])
				}
			}
			if !slices.Equal(after.kubepods, before.kubepods) {
				t.Errorf("kubepods cgroups: %v before, %v after", before.kubepods, after.kubepods)
			}
		})
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func zombie(p procRecord) bool {
	start, state, err := procStat(p.PID)
	return err == nil && start == p.Start && state == 'Z'
}

// checkGone proves that no process, mount, namespace, file of a site is left.
func checkGone(t *testing.T, netns, dir string, procs []procRecord) {
	t.Helper()
	for _, p := range procs {
		if p.alive() {
			t.Errorf("process %s (pid %d) still alive", p.Name, p.PID)
		}
	}
	if m := hostMounts(dir, "/var/lib/kubelet", "/run/containerd", "/var/lib/cni", "/var/log/containers", netnsPath(netns)); len(m) > 0 {
		t.Errorf("mounts left on the host: %v", m)
	}
	for _, p := range []string{netnsPath(netns), dir, statePath(netns)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", p, err)
		}
	}
}

// The default BinDir is keyed by the version; each tools module builds what
// its go.mod pins.
func TestK8sVersionMatchesTools(t *testing.T) {
	for _, v := range K8sVersions {
		mod := filepath.Join(repoRoot(), K8sTools[v], "go.mod")
		b, err := os.ReadFile(mod)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^(require)?\s*k8s\.io/kubernetes ` + regexp.QuoteMeta(v) + `$`).Match(b) {
			t.Errorf("%s does not require k8s.io/kubernetes %s", mod, v)
		}
	}
}

func TestControlPlaneOnly(t *testing.T) {
	// Every version's API server reports its own version (stamped at build).
	for _, v := range K8sVersions[1:] {
		s, took := start(t, Options{ControlPlaneOnly: true, K8sVersion: v})
		t.Logf("%s control-plane-only start: %.1fs", v, took.Seconds())
		if out := kubectl(t, s, "get", "--raw", "/version"); !strings.Contains(out, `"gitVersion": "`+v+`"`) {
			t.Errorf("%s /version:\n%s", v, out)
		}
		s.Stop()
	}
	s, took := start(t, Options{ControlPlaneOnly: true})
	t.Logf("control-plane-only start: %.1fs", took.Seconds())
	if s.Registry != "" {
		t.Errorf("Registry = %q, want none", s.Registry)
	}
	if out := kubectl(t, s, "version", "-o", "json"); !strings.Contains(out, `"gitVersion": "`+K8sVersion+`"`) {
		t.Errorf("kubectl version:\n%s", out)
	}
	kubectl(t, s, "create", "namespace", "p7-test")
	if out := kubectl(t, s, "get", "namespace", "p7-test", "-o", "name"); strings.TrimSpace(out) != "namespace/p7-test" {
		t.Errorf("get namespace = %q", out)
	}
	// Command runs inside, in the caller's working directory.
	cmd := s.Command(context.Background(), "sh", "-c", "pwd; ip -o link show | wc -l; ip route show default")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// lo, the veth pair; no default route.
	if want := cmd.Dir + "\n3\n"; string(out) != want {
		t.Errorf("inside: %q, want %q", out, want)
	}

	// The API is not reachable from the host. (A plain connect proves
	// nothing: some CI networks accept any connection.)
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(filepath.Join(s.Dir, "pki", "ca.crt")); err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("site CA: %v", err)
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	if c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(s.NodeIP, "6443"), &tls.Config{RootCAs: pool}); err == nil {
		c.Close()
		t.Error("the site's API answers in the host namespace")
	}
	stopAndCheck(t, s, nil)
}

func TestFullSite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes site (skipped with -short)")
	}
	before := snapshot(t)
	s, took := start(t, Options{})
	t.Logf("full site start (first in this run): %.1fs", took.Seconds())
	if m := hostMounts(s.Dir, "/var/lib/kubelet", "/run/containerd"); len(m) > 0 {
		t.Errorf("site mounts visible on the host: %v", m)
	}

	t.Run("pod", func(t *testing.T) { // (a)
		t0 := time.Now()
		deployHello(t, s)
		t.Logf("push + pod Running: %.1fs", time.Since(t0).Seconds())
		if logs := kubectl(t, s, "logs", "hello"); !strings.Contains(logs, "p7fixture hello started") {
			t.Errorf("logs = %q", logs)
		}
		ip := strings.TrimSpace(kubectl(t, s, "get", "pod", "hello", "-o", "jsonpath={.status.podIP}"))
		cmd := s.Command(context.Background(), s.self, "http://"+net.JoinHostPort(ip, "10080")+"/")
		cmd.Env = append(cmd.Env, testMode+"=get")
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok hello" {
			t.Errorf("GET pod: %v %q", err, out)
		}
		procs := siteProcs(s)
		t.Logf("memory with a pod running: %.0f MiB RSS in %d processes", rssMiB(procs), len(procs))
	})
	t.Run("pull secret required", func(t *testing.T) { pullSecretRequired(t, s) }) // (a')
	t.Run("job", func(t *testing.T) { runJob(t, s) })                              // (b)
	t.Run("no route out", func(t *testing.T) {                                     // (c)
		cmd := s.Command(context.Background(), s.self, "192.0.2.1:443", "198.51.100.1:53", "[2001:db8::1]:443")
		cmd.Env = append(cmd.Env, testMode+"=dial")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var res []dialResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, r := range res {
			t.Logf("dial %s: %s after %s", r.Addr, r.Err, r.Took)
			// "network is unreachable" is the kernel's routing answer: it
			// cannot come from a timeout, so no clock is needed to prove it.
			if !strings.Contains(r.Err, "network is unreachable") {
				t.Errorf("dial %s: %q after %s, want network is unreachable", r.Addr, r.Err, r.Took)
			}
		}
	})
	t.Run("teardown", func(t *testing.T) {
		lateForker(t, s)
		stopAndCheck(t, s, &before)
	}) // (d)
}

// lateForker leaves in the site's mount namespace what a containerd shim
// killed mid-operation leaves: children forked while the teardown sweeps,
// each writing under /run/containerd. Once the site's tmpfs is gone such a
// write lands on the host, unless every one of them is dead before that.
func lateForker(t *testing.T, s *Site) {
	t.Helper()
	script := `while :; do
  (for i in $(seq 200); do mkdir -p /run/containerd/runc/k8s.io 2>/dev/null; sleep 0.02; done) &
  sleep 0.002
done`
	cmd := s.Command(context.Background(), "sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	time.Sleep(300 * time.Millisecond)
}

// TestCrashRecovery kills a process that runs a full site with a pod, as a
// test timeout would, and starts the next site over its leftovers: the
// second start in a row must clean up and work.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes site (skipped with -short)")
	}
	before := snapshot(t)
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), testMode+"=crash")
	child.Stderr = os.Stderr
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var crashed struct {
		NetNS, Dir string
		Procs      []procRecord
	}
	if err := json.NewDecoder(stdout).Decode(&crashed); err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("crash child: %v", err)
	}
	child.Process.Kill()
	child.Wait()
	if len(crashed.Procs) < 10 {
		t.Fatalf("crashed site had only %d processes: %+v", len(crashed.Procs), crashed.Procs)
	}
	t.Logf("killed the owner of %s with %d site processes running", crashed.NetNS, len(crashed.Procs))

	s, took := start(t, Options{})
	t.Logf("full site start over a crashed one (warm): %.1fs", took.Seconds())
	checkGone(t, crashed.NetNS, crashed.Dir, crashed.Procs)
	if _, err := s.PushImages(context.Background(), []string{helloImage}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, "create", "secret", "docker-registry", "regcred", "--docker-server="+s.Registry,
		"--docker-username="+s.RegistryUsername, "--docker-password="+s.RegistryPassword)
	runJob(t, s)
	stopAndCheck(t, s, &before)
}

func crashMain() int {
	ctx := context.Background()
	s, err := Start(ctx, Options{})
	if err == nil {
		err = func() error {
			if _, err := s.PushImages(ctx, []string{helloImage}); err != nil {
				return err
			}
			if _, err := s.Kubectl(ctx, "create", "secret", "docker-registry", "regcred", "--docker-server="+s.Registry,
				"--docker-username="+s.RegistryUsername, "--docker-password="+s.RegistryPassword); err != nil {
				return err
			}
			if _, err := s.Kubectl(ctx, "run", "hello", "--image="+s.Registry+"/"+helloImage,
				`--overrides={"spec":{"imagePullSecrets":[{"name":"regcred"}]}}`); err != nil {
				return err
			}
			_, err := s.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/hello", "--timeout=120s")
			return err
		}()
		if err != nil {
			s.Stop()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"NetNS": s.NetNS, "Dir": s.Dir, "Procs": siteProcs(s)})
	time.Sleep(time.Hour) // until killed
	return 0
}

type dialResult struct {
	Addr, Err string
	Took      time.Duration
}

func dialMain(addrs []string) int {
	var res []dialResult
	for _, a := range addrs {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", a, 10*time.Second)
		r := dialResult{Addr: a, Took: time.Since(t0)}
		if err == nil {
			c.Close()
			r.Err = "connected"
		} else {
			r.Err = err.Error()
			if errors.Is(err, syscall.ENETUNREACH) {
				r.Err += " (ENETUNREACH)"
			}
		}
		res = append(res, r)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}
