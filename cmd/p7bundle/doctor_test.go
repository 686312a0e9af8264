package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/internal/probe"
	"github.com/p7bundle/p7bundle/internal/testing/testsite"
)

// asListeners makes the test binary a PostgreSQL-speaking listener and an
// SMTP listener (PGADDR,SMTPADDR) inside the site, for doctor to find.
const asListeners = "P7BUNDLE_TEST_AS_LISTENERS"

func serveListeners(addrs string) {
	pgAddr, smtpAddr, _ := strings.Cut(addrs, ",")
	serve := func(addr string, handle func(net.Conn)) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); handle(c) }()
			}
		}()
	}
	// The answer of a PostgreSQL server without TLS to an SSLRequest.
	serve(pgAddr, func(c net.Conn) {
		b := make([]byte, 8)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write([]byte("N"))
		}
	})
	serve(smtpAddr, func(c net.Conn) { c.Write([]byte("220 site-mail ESMTP test\r\n")) })
	fmt.Println("ready")
	select {}
}

type doctorReport struct {
	Checks []probe.Result `json:"checks"`
	Fail   int            `json:"fail"`
}

func (r doctorReport) status(check, key string) string {
	for _, c := range r.Checks {
		if c.Check == check && c.Key == key {
			return c.Status
		}
	}
	return "(none)"
}

func (r doctorReport) detail(check, key string) string {
	for _, c := range r.Checks {
		if c.Check == check && c.Key == key {
			return c.Detail
		}
	}
	return ""
}

func parseDoctor(t *testing.T, r result) doctorReport {
	t.Helper()
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%v", err, r)
	}
	return rep
}

// noProbeObjects fails when a doctor run left anything behind.
func noProbeObjects(t *testing.T, site *testsite.Site) {
	t.Helper()
	out, err := site.Kubectl(context.Background(), "get", "daemonsets,jobs,pods,secrets", "-A", "-l", "p7bundle.io/doctor", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("doctor left objects behind: %s", s)
	}
}

func TestDoctor(t *testing.T) {
	s := startSite(t)
	bundlePath := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, bundlePath); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	site := startTestSite(t)
	work := filepath.Join(s.dir, "admin")
	os.MkdirAll(work, 0o755)

	// In-site PostgreSQL and SMTP, on the node's address.
	self, _ := os.Executable()
	pgAddr, smtpAddr := site.NodeIP+":15432", site.NodeIP+":2525"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listeners := site.Command(ctx, self)
	listeners.Env = append(listeners.Env, asListeners+"="+pgAddr+","+smtpAddr)
	stdout, _ := listeners.StdoutPipe()
	if err := listeners.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); listeners.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("listeners: %q", line)
	}

	base := []string{"doctor", bundlePath, "--key", s.pub, "--registry", site.Registry, "--ca-file", site.RegistryCAFile,
		"--registry-username", site.RegistryUsername, "--registry-password-stdin", "--kubeconfig", site.Kubeconfig, "-n", "default"}
	services := []string{"--set", "postgres.host=" + site.NodeIP, "--set", "postgres.port=15432",
		"--set", "smtp.host=" + site.NodeIP, "--set", "smtp.port=2525"}
	doctor := func(password string, extra ...string) result {
		return siteRun(t, site, work, password+"\n", append(append([]string{}, base...), extra...)...)
	}

	r := doctor(site.RegistryPassword, append(services, "--json")...)
	rep := parseDoctor(t, r)
	if r.code != 0 || rep.Fail != 0 {
		t.Fatalf("doctor on a good site: %v", r)
	}
	for _, c := range []struct{ check, key, want string }{
		{"pull", testsite.NodeName, probe.Pass},
		{"registry", site.Registry, probe.Pass},
		{"postgres", "postgres.host", probe.Pass},
		{"smtp", "smtp.host", probe.Pass},
		{"kubernetes", "", probe.Warn},          // newer than the guide's tested 1.25.2
		{"node", testsite.NodeName, probe.Warn}, // 2 CPU: below the guide's 8
		{"values", "entrypoint.allowedHosts", probe.Warn},
		{"values", "storage.nfs.dataPath", probe.Warn}, // the chart's empty default
	} {
		if got := rep.status(c.check, c.key); got != c.want {
			t.Errorf("%s %s = %s, want %s (%s)", c.check, c.key, got, c.want, rep.detail(c.check, c.key))
		}
	}
	if d := rep.detail("postgres", "postgres.host"); !strings.Contains(d, pgAddr+" answers as PostgreSQL") || !strings.Contains(d, "from node "+testsite.NodeName) {
		t.Errorf("postgres detail %q", d)
	}
	noProbeObjects(t, site)

	t.Run("text report", func(t *testing.T) {
		r := doctor(site.RegistryPassword)
		if r.code != 0 || !strings.Contains(r.stdout, "PASS  pull          "+testsite.NodeName+": pulled ") || !strings.Contains(r.stdout, "(guide: 1 or 3 dedicated control-plane nodes)") {
			t.Errorf("text report: %v", r)
		}
		noProbeObjects(t, site)
	})

	// This kernel has no NFS client (no CONFIG_NFS_FS, no modules), so the
	// kubelet's mount of a share fails here as on a node without
	// nfs-common: doctor names the share and the kubelet's reason.
	t.Run("nfs share that does not mount", func(t *testing.T) {
		r := doctor(site.RegistryPassword, "--json", "--timeout", "90s", "--set", "storage.nfs.server="+site.NodeIP,
			"--set", "storage.nfs.dataPath=/export/data", "--set", "storage.nfs.homePath=/export/home")
		rep := parseDoctor(t, r)
		if r.code != exitPreflight || rep.status("nfs-mount", "storage.nfs.dataPath") != probe.Fail || rep.status("nfs-mount", "storage.nfs.homePath") != probe.Fail {
			t.Errorf("unmountable shares: %v", r)
		}
		t.Logf("nfs-mount: %s", rep.detail("nfs-mount", "storage.nfs.dataPath"))
		if d := rep.detail("nfs-mount", "storage.nfs.dataPath"); !strings.Contains(d, site.NodeIP+":/export/data does not mount") || !strings.Contains(d, "kubelet: ") {
			t.Errorf("mount failure detail %q", d)
		}
		if !strings.Contains(r.stderr, "site check failed: 2 FAIL: nfs-mount storage.nfs.dataPath; nfs-mount storage.nfs.homePath") {
			t.Errorf("error line: %s", r.stderr)
		}
		noProbeObjects(t, site)
	})

	t.Run("share checks on mounted volumes as UID 11111", func(t *testing.T) {
		shareChecksInCluster(t, site, manifestOf(t, bundlePath).Probe)
	})

	t.Run("node without the registry CA", func(t *testing.T) {
		hosts := filepath.Join(site.Dir, "containerd", "certs.d", site.Registry, "hosts.toml")
		if err := os.Rename(hosts, hosts+".off"); err != nil {
			t.Fatal(err)
		}
		r := doctor(site.RegistryPassword, "--json", "--timeout", "90s")
		if err := os.Rename(hosts+".off", hosts); err != nil {
			t.Fatal(err)
		}
		rep := parseDoctor(t, r)
		t.Logf("pull: %s", rep.detail("pull", testsite.NodeName))
		if d := rep.detail("pull", testsite.NodeName); r.code != exitPreflight || rep.status("pull", testsite.NodeName) != probe.Fail ||
			!strings.HasPrefix(d, "x509: the node does not trust the registry's certificate") || !strings.Contains(d, "kubelet: ") {
			t.Errorf("node without the CA: %v", r)
		}
		noProbeObjects(t, site)
	})

	t.Run("wrong registry password", func(t *testing.T) {
		r := doctor("wrong-"+site.RegistryPassword, "--json", "--timeout", "90s")
		rep := parseDoctor(t, r)
		t.Logf("pull: %s", rep.detail("pull", testsite.NodeName))
		if r.code != exitPreflight || rep.status("registry", site.Registry) != probe.Fail || rep.status("pull", testsite.NodeName) != probe.Fail ||
			!strings.HasPrefix(rep.detail("pull", testsite.NodeName), "401: the registry refused") {
			t.Errorf("wrong password: %v", r)
		}
		if strings.Contains(r.stdout+r.stderr, site.RegistryPassword) {
			t.Error("the registry password reached the output")
		}
		noProbeObjects(t, site)
	})

	t.Run("Ctrl-C cleans up", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := site.Command(ctx, self, append(append([]string{}, base...), services...)...)
		cmd.Env = append(cmd.Env, asCLI+"=1")
		cmd.Dir = work
		cmd.Stdin = strings.NewReader(site.RegistryPassword + "\n")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "doctor: pulling") {
				break
			}
		}
		time.Sleep(500 * time.Millisecond) // the DaemonSet exists
		cmd.Process.Signal(syscall.SIGINT)
		go io.Copy(io.Discard, stderr)
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
			t.Errorf("interrupted doctor: exit %d (%v)", code, err)
		}
		noProbeObjects(t, site)
	})
}

// shareChecksInCluster runs the probe's share checks in a pod of the site,
// as UID 11111, on volumes it mounts: two writable emptyDirs, one of them
// also named by a second key, and one mounted read-only; and, as doctor's
// Job does, the root check in an init container. (The kernel here
// cannot mount NFS; the checks only see a mounted directory either way.)
func shareChecksInCluster(t *testing.T, site *testsite.Site, probeRef string) {
	ctx := context.Background()
	image := site.Registry + "/pseven/" + strings.TrimPrefix(probeRef, "p7bundle.local/")
	auth := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, site.Registry, site.RegistryUsername, site.RegistryPassword)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: share-check-pull, namespace: default}
type: kubernetes.io/dockerconfigjson
stringData: {".dockerconfigjson": %[1]q}
---
apiVersion: v1
kind: Pod
metadata: {name: share-check, namespace: default}
spec:
  restartPolicy: Never
  imagePullSecrets: [{name: share-check-pull}]
  securityContext: {runAsUser: 11111, runAsGroup: 11111, runAsNonRoot: true}
  volumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}, {name: ro, emptyDir: {}}]
  initContainers:
  - name: root
    image: %[2]s
    args: [check, --root, --share, storage.a=/s/a]
    securityContext: {runAsUser: 0, runAsGroup: 0, runAsNonRoot: false}
    volumeMounts: [{name: a, mountPath: /s/a}]
  containers:
  - name: probe
    image: %[2]s
    args: [check, --share, storage.a=/s/a, --share, storage.b=/s/b, --share, storage.same=/s/a, --share, storage.ro=/s/ro]
    volumeMounts: [{name: a, mountPath: /s/a}, {name: b, mountPath: /s/b}, {name: ro, mountPath: /s/ro, readOnly: true}]
`, auth, image)
	file := filepath.Join(t.TempDir(), "share-check.yaml")
	os.WriteFile(file, []byte(manifest), 0o600)
	if out, err := site.Kubectl(ctx, "apply", "-f", file); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer site.Kubectl(ctx, "delete", "-f", file, "--wait=false")
	if out, err := site.Kubectl(ctx, "wait", "pod/share-check", "-n", "default", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	logs, err := site.Kubectl(ctx, "logs", "share-check", "-n", "default", "-c", "probe")
	if err != nil {
		t.Fatal(err)
	}
	rootLogs, err := site.Kubectl(ctx, "logs", "share-check", "-n", "default", "-c", "root")
	if err != nil {
		t.Fatal(err)
	}
	logs = append(logs, rootLogs...)
	got := map[string]string{}
	for _, r := range probe.Parse(strings.NewReader(string(logs))) {
		got[r.Check+" "+r.Key] = r.Status
	}
	for k, want := range map[string]string{
		"nfs-write storage.a": probe.Pass, "nfs-flock storage.a": probe.Pass,
		"nfs-write storage.b": probe.Pass, "nfs-flock storage.b": probe.Pass,
		"nfs-owner storage.a":     probe.Warn, // an emptyDir belongs to root
		"nfs-write storage.ro":    probe.Fail,
		"nfs-layout storage.same": probe.Fail,
		"nfs-root storage.a":      probe.Pass, // root stays root on an emptyDir, as with no_root_squash
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %s; probe output:\n%s", k, got[k], want, logs)
		}
	}
}
