package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testsite"
)

// nextMonthChart writes the fixture chart as next month's release into
// dir: new chart version and appVersion, the edgerouter's pinned tag moved.
func nextMonthChart(t *testing.T, dir string) string {
	t.Helper()
	src := testenv.FixtureChart()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch rel {
		case "Chart.yaml":
			b = bytes.Replace(b, []byte("version: 2023.09.25"), []byte("version: 2023.10.30"), 1)
			b = bytes.Replace(b, []byte(`appVersion: "6.47.4712"`), []byte(`appVersion: "6.48.5000"`), 1)
		case "values.yaml":
			b = bytes.Replace(b, []byte("pseven-edgerouter:6.47.4712"), []byte("pseven-edgerouter:6.48.5000"), 1)
			// A new component (values only, like blocknetworkgate): a new
			// repository whose shared layers are at the site in others.
			b = bytes.Replace(b, []byte("  blocknetworkgate: registry.pseven.io/pseven-blocknetworkgate\n"),
				[]byte("  blocknetworkgate: registry.pseven.io/pseven-blocknetworkgate\n  newcomponent: registry.pseven.io/pseven-newcomponent\n"), 1)
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// helmHistory is "revision:status ..." from Helm's release Secrets.
func helmHistory(t *testing.T, site *testsite.Site) string {
	t.Helper()
	out, err := site.Kubectl(context.Background(), "get", "secrets", "-n", "pseven-ns", "-l", "owner=helm,name=pseven-rl",
		"-o", `jsonpath={range .items[*]}{.metadata.labels.version}:{.metadata.labels.status}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(out))
	rev := func(l string) int { n, _ := strconv.Atoi(strings.SplitN(l, ":", 2)[0]); return n }
	sort.Slice(lines, func(i, j int) bool { return rev(lines[i]) < rev(lines[j]) })
	return strings.Join(lines, " ")
}

// stockHelm runs the helm CLI built by make test-deps inside the site.
func stockHelm(t *testing.T, site *testsite.Site, args ...string) (string, error) {
	t.Helper()
	helm, err := testenv.Tool("helm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := site.Command(ctx, helm, args...)
	cmd.Env = append(cmd.Env, "HELM_CACHE_HOME="+filepath.Join(site.Dir, "helm-cache"), "HELM_CONFIG_HOME="+filepath.Join(site.Dir, "helm-config"),
		"HELM_DATA_HOME="+filepath.Join(site.Dir, "helm-data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// deploymentUIDs maps each Deployment of the release to its UID: an
// uninstall would give every one a new UID.
func deploymentUIDs(t *testing.T, site *testsite.Site) map[string]string {
	t.Helper()
	out, err := site.Kubectl(context.Background(), "get", "deployments", "-n", "pseven-ns",
		"-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Fields(string(out)) {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	if len(m) == 0 {
		t.Fatal("no Deployments")
	}
	return m
}

type installReport struct {
	Action     string   `json:"action"`
	Revision   int      `json:"revision"`
	Status     string   `json:"status"`
	Backup     string   `json:"backup"`
	Healthy    bool     `json:"healthy"`
	ValuesDiff []string `json:"valuesDiff"`
	Pushed     struct {
		BlobsPushed int `json:"blobsPushed"`
	} `json:"pushed"`
}

// The monthly upgrade in the real site: v1 install, v2 (a differential
// bundle) upgrade carrying the values, a failed upgrade retried in place, a downgrade refused, a
// killed upgrade recovered. Nothing is ever uninstalled.
func TestMonthlyUpgradeInAirGappedSite(t *testing.T) {
	s := startSite(t)
	ctx := context.Background()
	v1, v2chart := monthPair(t, s)
	// This month's bundle is differential: the site holds last month's blobs.
	v2 := filepath.Join(s.dir, "pseven-2023.10.30.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(v2), "--chart", v2chart, "--base", v1)...); r.code != 0 {
		t.Fatalf("build v2: %v", r)
	}
	m2 := manifestOf(t, v2)
	// The security team approves this month's bundle for the site; the
	// upgrade requires it and records who approved what ran.
	security := filepath.Join(s.dir, "security")
	if r := p7(t, "", "keygen", "--output-prefix", security); r.code != 0 {
		t.Fatal(r)
	}
	if r := p7(t, "", "approve", v2, "--key", security+".key", "--bundle-key", s.pub, "--site", "plant-a", "--note", "CAB-2023-10"); r.code != 0 {
		t.Fatalf("approve v2: %v", r)
	}
	approver := approverOf(t, v2, security+".pub")
	for _, version := range testsite.K8sVersions {
		t.Run("kubernetes "+version, func(t *testing.T) {
			site := startTestSiteWith(t, testsite.Options{K8sVersion: version})
			work := filepath.Join(s.dir, "admin-"+version)
			os.MkdirAll(work, 0o755)
			install := func(bundlePath string, extra ...string) result {
				args := append([]string{"install", bundlePath, "--key", s.pub, "--registry", site.Registry, "--ca-file", site.RegistryCAFile,
					"--registry-username", site.RegistryUsername, "--registry-password-stdin", "--kubeconfig", site.Kubeconfig,
					"-n", "pseven-ns", "--timeout", "3m",
					// The admin values name a database that does not exist here: doctor would FAIL it.
					"--skip-doctor"}, extra...)
				return siteRun(t, site, work, site.RegistryPassword+"\n", args...)
			}
			report := func(r result) installReport {
				t.Helper()
				var rep installReport
				if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
					t.Fatalf("report: %v\n%v", err, r)
				}
				return rep
			}

			// Month 1: the admin's site settings given once, on the first install.
			r := install(v1, "--create-namespace", "--json", "--set", "postgres.host=db.acme.internal", "--set", "smtp.password=smtp-s3cret-value")
			if r.code != 0 || report(r).Revision != 1 || !report(r).Healthy {
				t.Fatalf("v1 install: %v", r)
			}
			uids := deploymentUIDs(t, site)
			secretsBefore := mustRead(t, filepath.Join(work, "pseven-secrets.yaml"))

			// Month 2, no -f: values carried over, new images running, backup
			// taken; only with the security team's approval for this site.
			if r := install(v2, "--require-approval", security+".pub", "--site", "plant-b"); r.code != exitVerify || !strings.Contains(r.stderr, "plant-b") {
				t.Fatalf("upgrade with an approval for another site: %v", r)
			}
			started := time.Now()
			r = install(v2, "--json", "--require-approval", security+".pub", "--site", "plant-a")
			upgradeTime := time.Since(started)
			if r.code != 0 {
				t.Fatalf("v2 upgrade: %v", r)
			}
			t.Logf("v2 upgrade (push of the changed blobs, values, backup, helm upgrade --wait, health check) took %v", upgradeTime.Round(100*time.Millisecond))
			rep := report(r)
			if rep.Action != "upgrade" || rep.Revision != 2 || !rep.Healthy || rep.Backup == "" {
				t.Errorf("v2 upgrade report: %+v", rep)
			}
			for _, want := range []string{"starting from the", "reusing the secrets of release pseven-rl", "backup of revision 1"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("upgrade output lacks %q:\n%s", want, r.stderr)
				}
			}
			diff := strings.Join(rep.ValuesDiff, "\n")
			if !strings.Contains(diff, "~ image.edgerouter: "+site.Registry+"/pseven/pseven-edgerouter:6.47.4712 -> "+site.Registry+"/pseven/pseven-edgerouter:6.48.5000") {
				t.Errorf("values diff:\n%s", diff)
			}
			if strings.Contains(diff, "db.acme.internal") || strings.Contains(r.stdout+r.stderr, "smtp-s3cret-value") {
				t.Errorf("carried values changed or a secret was printed:\n%s", diff)
			}
			valuesFile := string(mustRead(t, filepath.Join(work, "values.airgap.yaml")))
			for _, want := range []string{"host: db.acme.internal", "smtp-s3cret-value", "pseven-app:6.48.5000"} {
				if !strings.Contains(valuesFile, want) {
					t.Errorf("values.airgap.yaml lacks %q", want)
				}
			}
			if !bytes.Equal(secretsBefore, mustRead(t, filepath.Join(work, "pseven-secrets.yaml"))) {
				t.Error("secrets file changed")
			}
			backup := filepath.Join(work, rep.Backup)
			if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("backup %s: %v %v", backup, st, err)
			}
			entries, err := installer.ReadBackup(backup)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(entries["values.yaml"], []byte("db.acme.internal")) || !bytes.Contains(entries["values.yaml"], []byte("pseven-edgerouter:6.47.4712")) ||
				!bytes.Contains(entries["history.json"], []byte(`"chart": "pseven-2023.09.25"`)) || !bytes.Contains(entries["manifest.yaml"], []byte("kind: Deployment")) ||
				!bytes.Equal(entries["pseven-secrets.yaml"], secretsBefore) {
				t.Errorf("backup content: %d entries", len(entries))
			}
			// The upgraded pods run this month's images.
			v2digests := map[string]string{}
			for _, img := range m2.Images {
				v2digests[siteRef(site.Registry, img.Ref)] = img.Digest.String()
			}
			waitPodsFrom(t, site, v2digests, started.Add(upgradeTime))
			approvedBy := "Upgrade complete; approved by " + approver + " (pseven-2023.10.30.tar.zst.approval.jsonl line 1, sha256:"
			if d := releaseDescription(t, site, 2); !strings.HasPrefix(d, approvedBy) {
				t.Errorf("revision 2 description %q, want %q…", d, approvedBy)
			}
			if got := deploymentUIDs(t, site); !equalMaps(got, uids) {
				t.Errorf("Deployments were recreated: %v -> %v", uids, got)
			}

			// A failed upgrade (a post-upgrade hook fails) leaves revision 3 failed
			// while revision 2 runs; the retry upgrades in place.
			r = install(v2, "--set", "testing.failUpgradeHook=true")
			if r.code != exitInstall || !strings.Contains(r.stderr, "revision 2 still runs, nothing was uninstalled") {
				t.Fatalf("failing upgrade: %v", r)
			}
			if h := helmHistory(t, site); h != "1:superseded 2:deployed 3:failed" {
				t.Errorf("history after the failed upgrade: %s", h)
			}
			r = install(v2, "--json")
			if r.code != 0 || report(r).Revision != 4 || !strings.Contains(r.stderr, "retrying as an upgrade (nothing is uninstalled)") {
				t.Fatalf("retry: %v", r)
			}
			// The retry's backup is of revision 2: it keeps who approved it.
			if entries, err := installer.ReadBackup(filepath.Join(work, report(r).Backup)); err != nil || !bytes.Contains(entries["history.json"], []byte(approvedBy)) {
				t.Errorf("the backup of revision 2 does not name its approval (%v):\n%s", err, entries["history.json"])
			}
			// And so does what an admin sends the vendor.
			supportOut := filepath.Join(work, "support-r4.tar.zst")
			if r := siteRun(t, site, work, "", "support", "-n", "pseven-ns", "--release", "pseven-rl", "-o", supportOut, "--kubeconfig", site.Kubeconfig); r.code != 0 {
				t.Fatalf("support: %v", r)
			}
			if entries, err := installer.ReadBackup(supportOut); err != nil || !bytes.Contains(entries["support/history.json"], []byte(approvedBy)) {
				t.Errorf("the support archive does not name the approval (%v):\n%s", err, entries["support/history.json"])
			}
			if strings.Contains(r.stderr, "uninstalling") {
				t.Errorf("the retry uninstalled:\n%s", r.stderr)
			}
			if h := helmHistory(t, site); h != "1:superseded 2:superseded 3:failed 4:deployed" {
				t.Errorf("history after the retry: %s", h)
			}
			if got := deploymentUIDs(t, site); !equalMaps(got, uids) {
				t.Errorf("Deployments were recreated by the retry: %v -> %v", uids, got)
			}

			// Last month's bundle is refused; nothing changes.
			r = install(v1)
			if r.code != exitPreflight || !strings.Contains(r.stderr, "refusing to downgrade") {
				t.Errorf("downgrade: %v", r)
			}

			// An upgrade killed while Helm waits for a hook leaves pending-upgrade: a clear
			// error, and --recover rolls back and upgrades.
			self, _ := os.Executable()
			kctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			cmd := site.Command(kctx, self, "install", v2, "--key", s.pub, "--registry", site.Registry, "--ca-file", site.RegistryCAFile,
				"--registry-username", site.RegistryUsername, "--registry-password-stdin", "--kubeconfig", site.Kubeconfig, "-n", "pseven-ns", "--skip-doctor",
				"--set", "testing.failUpgradeHook=true", "--set", "testing.hookDeadline=600")
			cmd.Env, cmd.Dir, cmd.Stdin = append(cmd.Env, asCLI+"=1"), work, strings.NewReader(site.RegistryPassword+"\n")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(3 * time.Minute); !strings.Contains(helmHistory(t, site), "5:pending-upgrade"); time.Sleep(time.Second) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("no pending-upgrade revision: %s", helmHistory(t, site))
				}
			}
			cmd.Process.Kill()
			var exitErr *exec.ExitError
			if err := cmd.Wait(); !errors.As(err, &exitErr) {
				t.Fatalf("killed install: %v", err)
			}
			r = install(v2)
			if r.code != exitPreflight || !strings.Contains(r.stderr, "revision 5 is pending-upgrade") || !strings.Contains(r.stderr, "--recover") {
				t.Errorf("pending: %v", r)
			}
			r = install(v2, "--recover", "--json")
			if r.code != 0 || report(r).Status != "deployed" || !strings.Contains(r.stderr, "rolling back to revision 4") {
				t.Fatalf("--recover: %v", r)
			}
			if h := helmHistory(t, site); h != "1:superseded 2:superseded 3:failed 4:superseded 5:failed 6:superseded 7:deployed" {
				t.Errorf("history after --recover: %s", h)
			}
			if got := deploymentUIDs(t, site); !equalMaps(got, uids) {
				t.Errorf("Deployments were recreated by --recover: %v -> %v", uids, got)
			}

			// The stock Helm CLI on our release, as the README tells admins
			// to roll back; the next p7bundle install goes on from there.
			helm := func(args ...string) string {
				t.Helper()
				out, err := stockHelm(t, site, append(args, "-n", "pseven-ns")...)
				if err != nil {
					t.Fatalf("helm %v: %v\n%s", args, err, out)
				}
				return out
			}
			if out := helm("history", "pseven-rl"); !strings.Contains(out, "pseven-2023.10.30") || !strings.Contains(out, "approved by "+approver) {
				t.Errorf("helm history:\n%s", out)
			}
			var history []struct{ Description string }
			if out := helm("history", "pseven-rl", "-o", "json"); json.Unmarshal([]byte(out), &history) != nil || len(history) != 7 || !strings.Contains(out, approvedBy) {
				t.Errorf("helm history -o json (7 revisions, revision 2 approved):\n%s", out)
			}
			if out := helm("get", "values", "pseven-rl"); !strings.Contains(out, "db.acme.internal") || !strings.Contains(out, "pseven-app:6.48.5000") {
				t.Errorf("helm get values lacks the carried and the bundle's values:\n%s", out)
			}
			helm("rollback", "pseven-rl", "1", "--wait", "--timeout", "3m")
			if h := helmHistory(t, site); !strings.HasSuffix(h, "7:superseded 8:deployed") {
				t.Errorf("history after helm rollback: %s", h)
			}
			r = install(v2, "--json")
			if r.code != 0 || report(r).Revision != 9 || report(r).Action != "upgrade" {
				t.Fatalf("install after helm rollback: %v", r)
			}
			if out := helm("get", "values", "pseven-rl"); !strings.Contains(out, "db.acme.internal") || !strings.Contains(out, "pseven-app:6.48.5000") {
				t.Errorf("values after rollback and install:\n%s", out)
			}
			if got := deploymentUIDs(t, site); !equalMaps(got, uids) {
				t.Errorf("Deployments were recreated after helm rollback: %v -> %v", uids, got)
			}
		})
	}
}

// releaseDescription is Helm's description of a revision, from its
// release Secret as stock helm reads it.
func releaseDescription(t *testing.T, site *testsite.Site, revision int) string {
	t.Helper()
	out, err := stockHelm(t, site, "history", "pseven-rl", "-n", "pseven-ns", "-o", "json")
	if err != nil {
		t.Fatalf("helm history: %v\n%s", err, out)
	}
	var h []struct {
		Revision    int    `json:"revision"`
		Description string `json:"description"`
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("helm history: %v\n%s", err, out)
	}
	for _, r := range h {
		if r.Revision == revision {
			return r.Description
		}
	}
	t.Fatalf("no revision %d in %s", revision, out)
	return ""
}

// approverOf is the key identity in the bundle's first approval line,
// signed by pub.
func approverOf(t *testing.T, bundlePath, pub string) string {
	t.Helper()
	v, err := bundle.LoadVerifier(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bundle.CheckApprovals(context.Background(), bundle.ApprovalPath(bundlePath), map[string]bundle.Verifier{pub: v}, "", "", "", time.Now())
	if err != nil || len(st) == 0 || st[0].Approval == nil {
		t.Fatalf("approvals of %s: %v %+v", bundlePath, err, st)
	}
	return st[0].Approval.Approver
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitPodsFrom waits until every pod runs an image of digests, by digest.
// Pods of Jobs created before since (the upgrade's end: a CronJob of the
// previous revision may fire until Helm replaces it) may rightly run the
// old images: not counted.
func waitPodsFrom(t *testing.T, site *testsite.Site, digests map[string]string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := site.Kubectl(context.Background(), "get", "pods", "-n", "pseven-ns", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var pods podList
		json.Unmarshal(out, &pods)
		var problems []string
		for _, p := range pods.Items {
			if len(p.Metadata.OwnerReferences) > 0 && p.Metadata.OwnerReferences[0].Kind == "Job" && p.Metadata.CreationTimestamp.Before(since.Truncate(time.Second)) {
				continue
			}
			if p.Status.Phase != "Running" && p.Status.Phase != "Succeeded" {
				problems = append(problems, p.Metadata.Name+" is "+p.Status.Phase)
			}
			for _, c := range append(p.Spec.Containers, p.Spec.InitContainers...) {
				if _, ok := digests[c.Image]; !ok {
					problems = append(problems, p.Metadata.Name+" runs "+c.Image)
				}
			}
			for _, cs := range p.Status.ContainerStatuses {
				if want := digests[cs.Image]; want != "" && !strings.HasSuffix(cs.ImageID, "@"+want) {
					problems = append(problems, p.Metadata.Name+": image ID "+cs.ImageID+", bundle digest "+want)
				}
			}
		}
		if len(pods.Items) > 0 && len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not all running this bundle's images: %v", problems)
		}
		time.Sleep(3 * time.Second)
	}
}
