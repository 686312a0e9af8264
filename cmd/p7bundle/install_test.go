package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/testing/testsite"
	"github.com/p7bundle/p7bundle/mirror"
)

// asCLI makes the test binary act as p7bundle, so a test can run the CLI as
// a process inside the site's network namespace.
const asCLI = "P7BUNDLE_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		// As main does: Ctrl-C cancels, and the command cleans up.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if addrs := os.Getenv(asListeners); addrs != "" {
		serveListeners(addrs)
	}
	os.Exit(m.Run())
}

// siteRun runs p7bundle inside the site with stdin, in dir.
func siteRun(t *testing.T, site *testsite.Site, dir, stdin string, args ...string) result {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := site.Command(ctx, self, append([]string{"p7bundle"}[:0], args...)...)
	cmd.Env = append(cmd.Env, asCLI+"=1")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// startTestSite starts an air-gapped test site, stopped when the test ends.
func startTestSite(t *testing.T) *testsite.Site {
	t.Helper()
	return startTestSiteWith(t, testsite.Options{})
}

func startTestSiteWith(t *testing.T, opts testsite.Options) *testsite.Site {
	t.Helper()
	opts.Logf = t.Logf
	site, err := testsite.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Stop() })
	return site
}

type podList struct {
	Items []struct {
		Metadata struct {
			Name              string    `json:"name"`
			CreationTimestamp time.Time `json:"creationTimestamp"`
			OwnerReferences   []struct {
				Kind string `json:"kind"`
			} `json:"ownerReferences"`
		} `json:"metadata"`
		Spec struct {
			Containers     []struct{ Image string } `json:"containers"`
			InitContainers []struct{ Image string } `json:"initContainers"`
		} `json:"spec"`
		Status struct {
			Phase             string `json:"phase"`
			ContainerStatuses []struct {
				Image   string `json:"image"`
				ImageID string `json:"imageID"`
			} `json:"containerStatuses"`
		} `json:"status"`
	} `json:"items"`
}

// The site registry here speaks token auth, its token service on a port of
// its own (GitLab's layout): install follows it (and says so once), and the
// kubelet pulls every image, doctor's probe included, with the pull secret
// install writes.
func TestInstallIntoAirGappedSite(t *testing.T) {
	s := startSite(t)
	bundlePath := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, bundlePath); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	m := manifestOf(t, bundlePath)
	for _, version := range testsite.K8sVersions {
		t.Run("kubernetes "+version, func(t *testing.T) {
			site := startTestSiteWith(t, testsite.Options{TokenAuth: true, K8sVersion: version})
			delegation := "egress: token service " + site.RegistryToken + ", named by " + site.Registry

			work := filepath.Join(s.dir, "admin-"+version)
			os.MkdirAll(work, 0o755)
			base := []string{bundlePath, "--key", s.pub, "--registry", site.Registry, "--ca-file", site.RegistryCAFile,
				"--registry-username", site.RegistryUsername, "--registry-password-stdin", "--kubeconfig", site.Kubeconfig}
			install := func(extra ...string) result {
				return siteRun(t, site, work, site.RegistryPassword+"\n", append(append([]string{"install"}, base...), extra...)...)
			}
			secretsFile := filepath.Join(work, "pseven-secrets.yaml")
			logFile := filepath.Join(work, "pseven-2023.09.25.log")

			t.Run("bad input changes nothing", func(t *testing.T) {
				if r := install("-n", "no-such-ns"); r.code != exitPreflight || !strings.Contains(r.stderr, `namespace "no-such-ns" does not exist`) {
					t.Errorf("missing namespace: %v", r)
				}
				bad := append([]string{"install"}, base...)
				bad[len(bad)-1] = filepath.Join(work, "unreachable.kubeconfig")
				os.WriteFile(bad[len(bad)-1], []byte(strings.ReplaceAll(string(mustRead(t, site.Kubeconfig)), site.APIServer, "https://127.0.0.1:1")), 0o600)
				if r := siteRun(t, site, work, site.RegistryPassword+"\n", bad...); r.code != exitPreflight || !strings.Contains(r.stderr, "127.0.0.1:1") {
					t.Errorf("unreachable API: %v", r)
				}
				if r := siteRun(t, site, work, "wrong\n", append(append([]string{"install"}, base...), "-n", "default")...); r.code != exitRegistry || !strings.Contains(r.stderr, site.Registry) {
					t.Errorf("wrong registry password: %v", r)
				}
				if r := install("-n", "default", "--strict-egress"); r.code != exitRegistry ||
					!strings.Contains(r.stderr, "(--strict-egress; to allow it, add --allow-endpoint "+site.RegistryToken+")") {
					t.Errorf("strict egress: %v", r)
				}
				otherKey := filepath.Join(s.dir, "mallory-"+version)
				if r := p7(t, "", "keygen", "--output-prefix", otherKey); r.code != 0 {
					t.Fatal(r)
				}
				args := append([]string{"install"}, base...)
				args[indexOf(args, "--key")+1] = otherKey + ".pub"
				if r := siteRun(t, site, work, site.RegistryPassword+"\n", append(args, "-n", "default")...); r.code != exitVerify || !strings.Contains(r.stderr, "table of contents") {
					t.Errorf("bundle not signed by --key: %v", r)
				}
				if _, err := os.Stat(secretsFile); err == nil {
					t.Error("a failed preflight wrote secrets")
				}
				// A first install never overwrites a secrets file already there.
				other := filepath.Join(s.dir, "other-admin-"+version)
				os.MkdirAll(other, 0o755)
				os.WriteFile(filepath.Join(other, "pseven-secrets.yaml"), []byte("keep: me\n"), 0o600)
				r := siteRun(t, site, other, site.RegistryPassword+"\n", append(append([]string{"install"}, base...), "-n", "default", "--release", "other")...)
				if r.code != exitInstall || !strings.Contains(r.stderr, "pseven-secrets.yaml already exists") {
					t.Errorf("existing secrets file: %v", r)
				}
				if got := string(mustRead(t, filepath.Join(other, "pseven-secrets.yaml"))); got != "keep: me\n" {
					t.Errorf("secrets file changed to %q", got)
				}
			})

			// An executor asking for more memory than the node has never schedules:
			// --wait times out and the release is left failed. The secrets are
			// generated on this first attempt.
			failed := install("-n", "pseven-ns", "--create-namespace", "--wait", "--timeout", "20s",
				"--set", "sizing.htcondorexecuteResources.requests.memory=1000Gi")
			if failed.code != exitInstall || !strings.Contains(failed.stderr, "running "+site.Registry+"/pseven/pseven-secretgen:6.47.4712 as a Job") {
				t.Fatalf("install meant to fail after generating secrets: %v", failed)
			}

			r := install("-n", "pseven-ns", "--wait", "--timeout", "5m")
			if r.code != 0 {
				t.Fatalf("install: %v\nlog: %s", r, mustRead(t, logFile))
			}
			t.Logf("install output:\n%s%s", r.stderr, r.stdout)
			if n := strings.Count(r.stderr, delegation+"\n"); n != 1 || strings.Count(r.stderr, "egress: ") != 1 {
				t.Errorf("install logged the token service %d times, want once: %s", n, delegation)
			}
			if !strings.Contains(string(mustRead(t, logFile)), delegation) {
				t.Errorf("the install log lacks %q", delegation)
			}
			for _, want := range []string{"no revision was ever deployed (last: revision 1, failed): uninstalling the failed installation", "reusing the secrets of release pseven-rl"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("install output lacks %q", want)
				}
			}
			// The guide's tested range passes quietly; a newer version is named.
			if newer := "Kubernetes " + version + " is newer than 1.25.2"; strings.Contains(r.stderr, newer) != (version == testsite.K8sVersion) {
				t.Errorf("on %s, the warning %q: %v", version, newer, strings.Contains(r.stderr, newer))
			}
			for _, want := range []string{"sign-in URL:   http://" + site.NodeIP + ":30080/", "health check:  http://" + site.NodeIP + ":30001/", "worker nodes:  " + site.NodeIP} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("report lacks %q:\n%s", want, r.stdout)
				}
			}

			// The secretgen Job really ran: its output became pseven-secrets.yaml.
			st, err := os.Stat(secretsFile)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("secrets file: %v, %v", st, err)
			}
			secrets := string(mustRead(t, secretsFile))
			if !strings.Contains(secrets, "djangoSecretKey") {
				t.Errorf("secrets file is not secretgen output:\n%d bytes", len(secrets))
			}
			// No secret reaches stdout, stderr or the log.
			var secretValues []string
			for _, line := range strings.Split(secrets, "\n") {
				if _, v, ok := strings.Cut(line, ": "); ok && len(strings.TrimSpace(v)) >= 16 {
					secretValues = append(secretValues, strings.TrimSpace(v))
				}
			}
			logText := string(mustRead(t, logFile))
			for _, secret := range append(secretValues, site.RegistryPassword, testKeyPassword) {
				if strings.Contains(r.stdout+r.stderr+failed.stdout+failed.stderr+logText, secret) {
					t.Errorf("a secret value reached the output or the log")
				}
			}

			// Generated secrets live only in pseven-secrets.yaml, the registry
			// password only in values.airgap.yaml; both 0600.
			assertSecretsContained(t, work, append(secretValues, site.RegistryPassword, testKeyPassword), "pseven-secrets.yaml", "values.airgap.yaml")

			// Every pod runs, pulled from the site registry with the bundle's digest.
			digests := map[string]string{}
			for _, img := range m.Images {
				digests[siteRef(site.Registry, img.Ref)] = img.Digest.String()
			}
			waitPodsFrom(t, site, digests, time.Time{})

			t.Run("support archive holds no secret", func(t *testing.T) {
				out := filepath.Join(work, "support.tar.zst")
				r := siteRun(t, site, work, "", "support", "-n", "pseven-ns", "--bundle", bundlePath, "-o", out, "--kubeconfig", site.Kubeconfig)
				if r.code != 0 {
					t.Fatalf("support: %v", r)
				}
				if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("support archive: %v %v", st, err)
				}
				entries, err := installer.ReadBackup(out) // the same tar.zst of small files
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range []string{"support/README.txt", "support/history.json", "support/manifest.yaml", "support/values.yaml",
					"support/pods.yaml", "support/events.yaml", "support/nodes.yaml", "support/install-logs/pseven-2023.09.25.log", "support/bundle-manifest.json"} {
					if _, ok := entries[want]; !ok {
						t.Errorf("support archive lacks %s", want)
					}
				}
				logs := 0
				for name := range entries {
					if strings.HasPrefix(name, "support/logs/") {
						logs++
					}
				}
				if logs < 5 {
					t.Errorf("support archive has %d container logs", logs)
				}
				for name, data := range entries {
					for _, secret := range append(secretValues, site.RegistryPassword) {
						if strings.Contains(string(data), secret) {
							t.Errorf("support archive entry %s holds a secret", name)
						}
					}
				}
				if !strings.Contains(string(entries["support/values.yaml"]), "password: (redacted)") {
					t.Errorf("values.yaml:\n%s", entries["support/values.yaml"])
				}
			})

			// Install ran doctor first, and doctor cleaned up after itself.
			if !strings.Contains(r.stderr, "doctor: PASS  pull          "+testsite.NodeName) {
				t.Errorf("install did not run doctor:\n%s", r.stderr)
			}
			noProbeObjects(t, site)

			t.Run("dry run changes nothing", func(t *testing.T) {
				r := install("-n", "pseven-ns", "--dry-run")
				if r.code != 0 || !strings.Contains(r.stderr, "would upgrade (dry run) release pseven-rl") {
					t.Errorf("dry run: %v", r)
				}
			})

			t.Run("second install upgrades, pushes nothing, keeps secrets", func(t *testing.T) {
				before := mustRead(t, secretsFile)
				r := install("-n", "pseven-ns", "--wait", "--timeout", "5m", "--json")
				if r.code != 0 {
					t.Fatalf("second install: %v", r)
				}
				var rep struct {
					Action   string `json:"action"`
					Revision int    `json:"revision"`
					Pushed   struct {
						BlobsPushed int `json:"blobsPushed"`
					} `json:"pushed"`
				}
				if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
					t.Fatal(err)
				}
				if rep.Action != "upgrade" || rep.Revision != 2 || rep.Pushed.BlobsPushed != 0 {
					t.Errorf("second install: %+v", rep)
				}
				if !bytes.Equal(before, mustRead(t, secretsFile)) || !strings.Contains(r.stderr, "reusing the secrets of release pseven-rl") {
					t.Errorf("secrets not reused: %s", r.stderr)
				}
			})
		})
	}
}

// siteRef is where push puts a bundle image under the default prefix.
func siteRef(host, ref string) string {
	t, err := mirror.TargetFor(ref, installer.DefaultPrefix)
	if err != nil {
		panic(err)
	}
	return t.Ref(host, "")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
