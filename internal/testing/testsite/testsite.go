// Package testsite runs an air-gapped test site: a single-node Kubernetes
// cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet, containerd + runc, bridge CNI) and a TLS + htpasswd docker-registry,
// all inside a fresh network namespace that has no route out, sharing one
// private mount namespace. Tests and the demo start and stop it; it does not
// depend on package testing.
//
// Requirements: root, `make test-deps` (Debian packages and the Kubernetes
// binaries) and the Go toolchain. Pod cgroups are shared with the host, so
// only one full site runs at a time per machine: Start waits for the previous
// one. Control-plane-only sites have no such limit.
//
// Recipe and the reasons behind each setting:
// shared/reference/single-node-kubernetes/README.md.
package testsite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/p7bundle/p7bundle/internal/testing/fixture"
)

// K8sVersions are the Kubernetes versions a site runs, each built by
// tools/k8s/build.sh from its tools module (K8sTools): the current one
// first (the default), the one the vendor tested pSeven with, the oldest
// minor whose module carries its generated OpenAPI code, and the oldest the
// vendor supports (build.sh generates that code for it).
var K8sVersions = []string{K8sVersion, "v1.25.2", "v1.24.17", "v1.22.16"}

// K8sTools names the tools module that builds each of K8sVersions.
var K8sTools = map[string]string{
	K8sVersion: "tools/k8s",
	"v1.25.2":  "tools/k8s-1.25",
	"v1.24.17": "tools/k8s-1.24",
	"v1.22.16": "tools/k8s-1.22",
}

const (
	// K8sVersion is the Kubernetes version tools/k8s builds: the default.
	K8sVersion = "v1.37.0"
	// NodeName is the name of the site's only node.
	NodeName = "p7site-node"

	nodeIP       = "198.18.0.2" // RFC 2544 benchmarking range: routed nowhere
	apiPort      = 6443
	registryPort = 5000
	tokenPort    = 5001 // the registry's token service, with Options.TokenAuth
	serviceCIDR  = "10.96.0.0/16"
	serviceAPIIP = "10.96.0.1"
	podCIDR      = "10.244.0.0/24"
	podGateway   = "10.244.0.1"
	bridgeName   = "p7cni0"
	stopGrace    = 5 * time.Second
)

// Options configures Start.
type Options struct {
	Dir              string // working dir (must be empty or absent); "" => temp dir removed by Stop
	ControlPlaneOnly bool   // etcd + kube-apiserver only, no node/registry/containerd (fast API-only tests)
	// K8sVersion is one of K8sVersions; default K8sVersion.
	K8sVersion string
	BinDir     string // k8s binaries; default <repo>/.cache/k8s/<K8sVersion>/bin
	// TokenAuth puts the registry behind a token service on a port of its
	// own (GitLab's layout) instead of htpasswd: Site.RegistryToken.
	TokenAuth bool
	// Logf, if set, receives progress lines with timings.
	Logf func(format string, args ...any)
}

// Site is a running test site. Its addresses are reachable only inside the
// site's namespaces: run clients with Command, Kubectl or PushImages.
type Site struct {
	Dir, NetNS string
	Kubeconfig string // admin kubeconfig; the API address is only reachable INSIDE the namespace
	APIServer  string // https://IP:6443 as seen inside
	NodeIP     string // e.g. 198.18.0.2
	// Registry is "NODEIP:PORT" of the site docker-registry (TLS + htpasswd),
	// reachable inside only. Empty for control-plane-only sites. containerd
	// trusts its CA but holds no credentials for it: a pod pulls from it only
	// with an imagePullSecret that matches (the pause image is preloaded).
	Registry                                           string
	RegistryCAFile, RegistryUsername, RegistryPassword string
	// RegistryToken is "NODEIP:PORT" of the registry's token service
	// (TLS, the registry's certificate) with Options.TokenAuth.
	RegistryToken string

	opts    Options
	binDir  string
	self    string // this executable, re-run for the helper modes
	start   time.Time
	mu      sync.Mutex
	st      *state
	holder  int                      // pid anchoring the namespaces
	exited  map[string]chan struct{} // closed when the daemon exits
	lock    *os.File                 // full-site lock
	stopped bool
}

var siteSeq atomic.Int32

// fullLock serialises full sites across processes: pod cgroups and the
// kubelet's sysctls are global.
var fullLock = filepath.Join(stateRoot, "full.lock")

// Start creates the site and returns when it is ready: the API answers, and
// for a full site the node is Ready and the default ServiceAccount exists.
// On error everything already started is torn down.
func Start(ctx context.Context, opts Options) (_ *Site, err error) {
	s := &Site{
		opts: opts, NodeIP: nodeIP, APIServer: fmt.Sprintf("https://%s:%d", nodeIP, apiPort),
		start: time.Now(), exited: map[string]chan struct{}{},
	}
	if err := s.checkPrereqs(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if !opts.ControlPlaneOnly {
		s.logf("waiting for the full-site lock")
		if s.lock, err = lockFile(ctx, fullLock); err != nil {
			return nil, fmt.Errorf("%w (only one full site runs at a time)", err)
		}
		s.Registry = fmt.Sprintf("%s:%d", nodeIP, registryPort)
		if opts.TokenAuth {
			s.RegistryToken = fmt.Sprintf("%s:%d", nodeIP, tokenPort)
		}
	}
	if err := cleanStale(ctx); err != nil {
		return nil, err
	}

	s.NetNS = fmt.Sprintf("p7site-%d-%d", os.Getpid(), siteSeq.Add(1))
	owner, err := recordOf("owner", os.Getpid())
	if err != nil {
		return nil, err
	}
	s.st = &state{Name: s.NetNS, Owner: owner, Full: !opts.ControlPlaneOnly}
	if opts.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "p7site-"); err != nil {
			return nil, err
		}
		s.st.RemoveDir = true
	} else {
		if s.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, err
		}
		// A previous site's etcd data or registry would leak into this one.
		if entries, _ := os.ReadDir(s.Dir); len(entries) > 0 {
			return nil, fmt.Errorf("testsite: Options.Dir %s is not empty", s.Dir)
		}
	}
	s.st.Dir = s.Dir
	if err := s.st.save(); err != nil {
		return nil, err
	}
	if err := s.up(ctx); err != nil {
		return nil, fmt.Errorf("testsite: %w", err)
	}
	s.logf("site ready")
	return s, nil
}

func (s *Site) up(ctx context.Context) error {
	for _, d := range []string{"logs", "etcd", "kubectl-cache"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := s.writePKI(); err != nil {
		return err
	}
	full := !s.opts.ControlPlaneOnly
	if full {
		if err := s.writeConfigs(); err != nil {
			return err
		}
		pause, err := buildPause(ctx)
		if err != nil {
			return err
		}
		if err := writePauseArchive(pause, s.pauseImage(), s.pauseArchive()); err != nil {
			return fmt.Errorf("pause image: %w", err)
		}
		// Build the fixture binary here: the helper inside finds it cached.
		if _, err := fixture.BuildBinary(ctx, ""); err != nil {
			return err
		}
	}
	s.logf("pki and configs written")

	if err := s.createNetwork(ctx); err != nil {
		return err
	}
	if err := s.startHolder(ctx); err != nil {
		return err
	}
	if full {
		if err := s.privateMounts(ctx); err != nil {
			return err
		}
	}
	s.logf("network and mount namespaces ready")

	if err := s.startDaemon("etcd", "/usr/bin/etcd", "--name=p7site", "--data-dir="+s.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=p7site=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381"); err != nil {
		return err
	}
	imported := make(chan error, 1)
	if full {
		if err := s.startDaemon("registry", "/usr/bin/docker-registry", "serve", s.path("registry.yml")); err != nil {
			return err
		}
		if s.RegistryToken != "" {
			if err := s.startDaemon("token", "env", helperEnv+"=token", s.self,
				s.RegistryToken, s.RegistryUsername, s.path("pki/registry-password"), s.path("pki/registry.crt"), s.path("pki/registry.key"), s.path("pki")); err != nil {
				return err
			}
		}
		// The reaper adopts containerd's daemonized shims; see helperReap.
		if err := s.startDaemon("containerd", "env", helperEnv+"=reap", s.self,
			"/usr/bin/containerd", "--config="+s.path("containerd/config.toml")); err != nil {
			return err
		}
		go func() {
			err := s.importPause(ctx, 30*time.Second)
			if err == nil { // and the registry answers (nothing to push)
				_, err = s.push(ctx, pushRequest{Wait: 30 * time.Second})
			}
			imported <- err
		}()
	}
	pki := s.path("pki")
	if err := s.startDaemon("kube-apiserver", s.bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", apiPort), "--advertise-address="+s.NodeIP,
		"--tls-cert-file="+pki+"/apiserver.crt", "--tls-private-key-file="+pki+"/apiserver.key",
		"--client-ca-file="+pki+"/ca.crt", "--token-auth-file="+pki+"/tokens.csv",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-key-file="+pki+"/sa.pub", "--service-account-signing-key-file="+pki+"/sa.key",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range="+serviceCIDR,
		"--allow-privileged=true",
		// kubectl logs: the node name does not resolve here.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--cert-dir="+s.path("apiserver-certs")); err != nil {
		return err
	}
	if err := s.waitFor(ctx, "kube-apiserver /readyz", 2*time.Minute, []string{"etcd", "kube-apiserver"}, func() error {
		_, err := s.Kubectl(ctx, "get", "--raw", "/readyz")
		return err
	}); err != nil {
		return err
	}
	s.logf("kube-apiserver ready")
	if !full {
		return nil
	}

	if err := s.startDaemon("kube-controller-manager", s.bin("kube-controller-manager"),
		"--kubeconfig="+s.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+s.path("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+s.path("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", "--service-account-private-key-file="+pki+"/sa.key",
		"--root-ca-file="+pki+"/ca.crt", "--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+pki+"/ca.crt", "--cluster-signing-key-file="+pki+"/ca.key",
		"--service-cluster-ip-range="+serviceCIDR, "--leader-elect=false",
		"--cert-dir="+s.path("controller-manager-certs")); err != nil {
		return err
	}
	if err := s.startDaemon("kube-scheduler", s.bin("kube-scheduler"),
		"--kubeconfig="+s.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+s.path("scheduler.kubeconfig"),
		"--authorization-kubeconfig="+s.path("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--cert-dir="+s.path("scheduler-certs")); err != nil {
		return err
	}
	// The kubelet changes these global sysctls; teardown puts them back.
	sysctls, err := readSysctls(kubeletSysctls)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st.Sysctls = sysctls
	err = s.st.save()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	kubelet := []string{s.bin("kubelet"), "--config=" + s.path("kubelet/config.yaml"), "--kubeconfig=" + s.path("kubelet.kubeconfig"),
		"--root-dir=" + s.path("kubelet/root"), "--cert-dir=" + s.path("kubelet/pki"),
		"--hostname-override=" + NodeName, "--node-ip=" + s.NodeIP, "--v=2"}
	if s.legacyKubelet() {
		kubelet = append(kubelet, "--container-runtime-endpoint=unix://"+s.path("containerd.sock"))
	}
	if s.minorBefore(24) {
		// Until 1.24 the kubelet defaults to its built-in dockershim.
		kubelet = append(kubelet, "--container-runtime=remote")
	}
	if err := s.startDaemon("kubelet", kubelet...); err != nil {
		return err
	}
	if err := s.waitFor(ctx, "node Ready", 2*time.Minute, []string{"containerd", "kube-apiserver", "kubelet"}, func() error {
		out, err := s.Kubectl(ctx, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && string(out) != "True" {
			err = fmt.Errorf("Ready=%q", out)
		}
		return err
	}); err != nil {
		return err
	}
	s.logf("node Ready")
	select {
	case err := <-imported:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.waitFor(ctx, "default ServiceAccount", time.Minute, []string{"kube-apiserver", "kube-controller-manager"}, func() error {
		_, err := s.Kubectl(ctx, "get", "serviceaccount", "default", "-o", "name")
		return err
	}); err != nil {
		return err
	}
	s.logf("default ServiceAccount exists")
	return nil
}

func (s *Site) checkPrereqs() error {
	if os.Geteuid() != 0 {
		return errors.New("testsite: needs root (network namespaces, mounts, cgroups)")
	}
	if s.opts.K8sVersion == "" {
		s.opts.K8sVersion = K8sVersion
	}
	s.binDir = s.opts.BinDir
	if s.binDir == "" {
		s.binDir = filepath.Join(repoRoot(), ".cache", "k8s", s.opts.K8sVersion, "bin")
	}
	need := []string{s.bin("kube-apiserver"), s.bin("kubectl"), "/usr/bin/etcd", "/usr/bin/nsenter", "/usr/bin/unshare"}
	if !s.opts.ControlPlaneOnly {
		need = append(need, s.bin("kube-controller-manager"), s.bin("kube-scheduler"), s.bin("kubelet"),
			"/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/bin/docker-registry", "/usr/lib/cni/bridge")
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("testsite: %s not found: run \"make test-deps\"", p)
		}
	}
	var err error
	if s.self, err = os.Executable(); err != nil {
		return err
	}
	return nil
}

// repoRoot is the module root.
func repoRoot() string { return fixture.RepoRoot() }

func (s *Site) bin(name string) string { return filepath.Join(s.binDir, name) }

// legacyKubelet: before 1.27 the kubelet's config file knows neither
// containerRuntimeEndpoint, podLogsDir nor failCgroupV1 (the endpoint is a
// flag, pod logs go to /var/log/pods, cgroup v1 is simply supported).
func (s *Site) legacyKubelet() bool { return s.minorBefore(27) }

// minorBefore reports whether the site runs a Kubernetes 1.x older than 1.minor.
func (s *Site) minorBefore(minor int) bool {
	var major, m int
	fmt.Sscanf(s.opts.K8sVersion, "v%d.%d", &major, &m)
	return major == 1 && m < minor
}
func (s *Site) path(p string) string { return filepath.Join(s.Dir, p) }
func (s *Site) pauseImage() string   { return s.Registry + "/p7site/pause:1" }
func (s *Site) pauseArchive() string { return s.path("containerd/pause.tar") }
func (s *Site) logf(f string, a ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("testsite %s [%5.2fs] "+f, append([]any{s.NetNS, time.Since(s.start).Seconds()}, a...)...)
	}
}

// createNetwork makes the namespace: loopback, a veth pair with both ends
// inside for the node address (this kernel has no dummy links), no default
// route. The CNI bridge comes later.
func (s *Site) createNetwork(ctx context.Context) error {
	if err := netnsAdd(ctx, s.NetNS); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", "-n", s.NetNS, "-batch", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`link set lo up
link add site0 type veth peer name site0p
addr add %s/24 dev site0
link set site0p up
link set site0 up
`, s.NodeIP))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", s.NetNS, err, out)
	}
	return nil
}

// startHolder starts the process that anchors the site's network namespace
// and its private mount namespace; every daemon joins both. Not `ip netns
// exec`: it remounts /sys, which drops the cgroup v1 mounts the kubelet needs.
// Slave propagation: the host's mounts show inside, nothing leaks out.
func (s *Site) startHolder(ctx context.Context) error {
	cmd := exec.Command("nsenter", "--net="+netnsPath(s.NetNS), "--",
		"unshare", "--mount", "--propagation", "slave", "--", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.launch("holder", cmd); err != nil {
		return err
	}
	s.holder = cmd.Process.Pid
	// unshare has set the propagation once it has exec'ed sleep.
	return s.waitFor(ctx, "namespace holder", 10*time.Second, []string{"holder"}, func() error {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.holder))
		if strings.TrimSpace(string(comm)) != "sleep" {
			return errors.New("not ready")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.st.NetNSID, s.st.MntNSID = nsID(s.holder, "net"), nsID(s.holder, "mnt")
		return s.st.save()
	})
}

// privateMounts hides the host paths that containerd 1.6, the kubelet and
// the CNI plugins hard-code behind site-owned tmpfs and bind mounts, inside
// the site's mount namespace only.
func (s *Site) privateMounts(ctx context.Context) error {
	script := "set -e\n"
	targets := []string{"/run/containerd", "/run/netns", "/var/lib/kubelet", "/var/log/containers", "/var/lib/cni"}
	if s.legacyKubelet() {
		targets = append(targets, "/var/log/pods")
	}
	for _, target := range targets {
		if err := s.mkdirHost(target); err != nil {
			return err
		}
		if strings.HasPrefix(target, "/run/") {
			script += "mount -t tmpfs -o mode=0755 p7site " + target + "\n"
			continue
		}
		src := s.path("host" + target)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		script += "mount --bind " + src + " " + target + "\n"
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--target="+strconv.Itoa(s.holder), "--mount", "--", "sh", "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("private mounts: %w: %s", err, out)
	}
	return nil
}

// mkdirHost creates dir and its missing parents on the host, recording each
// one it created so teardown removes it.
func (s *Site) mkdirHost(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := s.mkdirHost(filepath.Dir(dir)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.HostDirs = append(s.st.HostDirs, dir)
	if err := s.st.save(); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o755)
}

// startDaemon runs argv inside the site's namespaces, logging to logs/NAME.log.
func (s *Site) startDaemon(name string, argv ...string) error {
	args := append([]string{"--target=" + strconv.Itoa(s.holder), "--net", "--mount", "--wd=" + s.Dir, "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + s.Dir}
	// Own process group: a Ctrl-C meant for the test must not kill the site
	// halfway; Stop (or the next Start after a crash) takes it down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return s.launch(name, cmd)
}

// launch starts cmd with its output in logs/NAME.log and records its pid.
// nsenter, unshare and env exec their programs, so the pid is the daemon's.
func (s *Site) launch(name string, cmd *exec.Cmd) error {
	logf, err := os.OpenFile(s.path("logs/"+name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	// Read before anyone can reap it: the pid stays ours until Wait.
	rec, recErr := recordOf(name, cmd.Process.Pid)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exited[name] = done
	if recErr != nil {
		return recErr
	}
	s.st.Procs = append(s.st.Procs, rec)
	return s.st.save()
}

// waitFor polls check every 200 ms until it succeeds, failing early (with
// the log's tail) when one of the watched processes exits.
func (s *Site) waitFor(ctx context.Context, what string, timeout time.Duration, watch []string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		for _, name := range watch {
			select {
			case <-s.exited[name]:
				return fmt.Errorf("waiting for %s: %s exited\n%s", what, name, s.logTail(name))
			default:
			}
		}
		if time.Now().After(deadline) {
			var tails string
			for _, name := range watch {
				tails += s.logTail(name)
			}
			return fmt.Errorf("waiting for %s: not ready after %s: %v\n%s", what, timeout, err, tails)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Site) logTail(name string) string {
	f, err := os.Open(s.path("logs/" + name + ".log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 3000 {
		f.Seek(st.Size()-3000, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return fmt.Sprintf("--- %s (tail) ---\n%s\n", s.path("logs/"+name+".log"), b)
}

// Command returns a command that runs name INSIDE the site's network and
// mount namespaces, with KUBECONFIG set to the admin kubeconfig and the
// site's Kubernetes binaries (kubectl) first in PATH. The working directory
// is the caller's (or cmd.Dir).
func (s *Site) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--target=" + strconv.Itoa(s.holder), "--net", "--mount", "--wd=.", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	env := []string{"KUBECONFIG=" + s.Kubeconfig, "KUBECACHEDIR=" + s.path("kubectl-cache")}
	for _, e := range os.Environ() {
		k, v, _ := strings.Cut(e, "=")
		switch strings.ToUpper(k) {
		case "KUBECONFIG", "KUBECACHEDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", helperEnv:
		case "PATH":
			env = append(env, "PATH="+s.binDir+":"+v)
		default:
			env = append(env, e)
		}
	}
	cmd.Env = env
	return cmd
}

// Kubectl runs the site's kubectl inside the site and returns its stdout;
// the error carries stderr.
func (s *Site) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := s.Command(ctx, s.bin("kubectl"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// importPause loads the pause (sandbox) image from its archive straight into
// containerd's k8s.io namespace, where the CRI plugin finds it and never
// pulls it. containerd holds no registry credentials: every image from the
// site registry needs the pod's imagePullSecrets, as on a real cluster. It
// waits up to timeout for containerd's socket. (It runs beside the start-up
// steps, so it must not use waitFor.)
func (s *Site) importPause(ctx context.Context, timeout time.Duration) error {
	t0 := time.Now()
	sock := s.path("containerd.sock")
	ctr := func(args ...string) ([]byte, error) {
		args = append([]string{"--address", sock, "--namespace", "k8s.io", "--connect-timeout", "10s"}, args...)
		cmd := s.Command(ctx, "ctr", args...)
		cmd.Dir = s.Dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return out, err
	}
	for {
		_, err := os.Stat(sock)
		if err == nil {
			_, err = ctr("images", "import", "--snapshotter", "overlayfs", s.pauseArchive())
		}
		if err == nil {
			break
		}
		if time.Since(t0) > timeout {
			return fmt.Errorf("pause image: import into containerd after %s: %w\n%s", timeout, err, s.logTail("containerd"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	out, err := ctr("images", "list", "--quiet")
	if err != nil {
		return err
	}
	if !slices.Contains(strings.Fields(string(out)), s.pauseImage()) {
		return fmt.Errorf("pause image: %s not in containerd after import; images: %q", s.pauseImage(), out)
	}
	s.logf("pause image imported into containerd in %.2fs", time.Since(t0).Seconds())
	return nil
}

// PushImages builds runnable fixture images (see package fixture) for refs
// ("repo:tag", relative to Registry) and pushes them into the site registry
// from inside the site. It returns ref => digest.
func (s *Site) PushImages(ctx context.Context, refs []string) (map[string]string, error) {
	if s.Registry == "" {
		return nil, errors.New("testsite: control-plane-only site has no registry")
	}
	if _, err := fixture.BuildBinary(ctx, ""); err != nil {
		return nil, err
	}
	return s.push(ctx, pushRequest{Fixture: refs, Wait: 10 * time.Second})
}

// push runs the push helper (this executable) inside the site.
func (s *Site) push(ctx context.Context, req pushRequest) (map[string]string, error) {
	req.Registry, req.Username, req.Password, req.CAFile = s.Registry, s.RegistryUsername, s.RegistryPassword, s.RegistryCAFile
	in, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd := s.Command(ctx, s.self)
	cmd.Env = append(cmd.Env, helperEnv+"=push")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("testsite: push: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	digests := map[string]string{}
	if err := json.Unmarshal(out, &digests); err != nil {
		return nil, fmt.Errorf("testsite: push: %w: %q", err, out)
	}
	return digests, nil
}

// Stop stops every process of the site (SIGTERM, SIGKILL after a grace
// period), removes the pod cgroups, restores the sysctls the kubelet changed,
// deletes the namespace and whatever the site created outside Dir, and
// removes Dir if Start created it. It is safe to call more than once.
func (s *Site) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	defer unlockFile(s.lock)
	if s.st == nil {
		return nil
	}
	start := time.Now()
	err := s.st.teardown(stopGrace)
	if err == nil {
		os.Remove(statePath(s.st.Name))
	}
	if s.opts.Logf != nil {
		s.opts.Logf("testsite %s stopped in %.2fs", s.NetNS, time.Since(start).Seconds())
	}
	return err
}
