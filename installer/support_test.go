package installer

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/manifests"
)

// Secrets planted where a site has them; none may reach the archive.
const (
	plantedRegistry = "planted-registry-pass-1" // registry.password, also in a pod log and the install log
	plantedPostgres = "planted-postgres-pass-2" // postgres.password, also in a ConfigMap and an event
	plantedSMTP     = "planted-smtp-pass-3"     // smtp.password, in a rendered Secret
	plantedKept     = "planted-django-key-4"    // the kept secrets Secret (top-level key "secrets")
	plantedEnv      = "planted-env-pass-5"      // a pod's PASSWORD env var, also in an annotation and a log
	plantedObject   = "planted-secret-object-6" // a Secret object in the namespace
	plantedOld      = "planted-old-revision-7"  // revision 1's postgres.password, in a previous log
	plantedOrphan   = "planted-license-8"       // a top-level value no chart defines
)

var planted = []string{plantedRegistry, plantedPostgres, plantedSMTP, plantedKept, plantedEnv, plantedObject, plantedOld, plantedOrphan}

type supportSite struct {
	kube    *fake.Clientset
	cluster *Cluster
	helm    *action.Configuration
	dir     string
	tails   []int64
	mu      sync.Mutex
}

func newSupportSite(t *testing.T, withRelease bool) *supportSite {
	t.Helper()
	ns := manifests.DefaultNamespace
	n := node("node-1", "192.0.2.10", "16Gi", "8", true)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app-0", Namespace: ns, Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"env":[{"name":"PASSWORD","value":"` + plantedEnv + `"}]}`}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "setup", Image: "site/pseven/setup:1"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "site/pseven/app:1", Env: []corev1.EnvVar{{Name: "PASSWORD", Value: plantedEnv}, {Name: "DB_HOST", Value: "db.site"}}},
				{Name: "sidecar", Image: "site/pseven/sidecar:1"},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", RestartCount: 2}, {Name: "sidecar"}}},
	}
	now := time.Now()
	event := func(name, msg string, at time.Time) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Message: msg, Reason: "Test",
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "app-0"}, LastTimestamp: metav1.NewTime(at)}
	}
	objects := []runtime.Object{&n, pod,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pseven-db", Namespace: ns}, Data: map[string][]byte{"password": []byte(plantedObject)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: keptSecretName(manifests.DefaultReleaseName), Namespace: ns},
			Data: map[string][]byte{secretsKey: []byte("secrets:\n  djangoSecretKey: " + plantedKept + "\n")}},
		event("later", "second event: login failed for password "+plantedPostgres, now),
		event("earlier", "first event", now.Add(-time.Hour)),
	}
	kube := fake.NewSimpleClientset(objects...)
	kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.25.2"}
	s := &supportSite{kube: kube, dir: t.TempDir(),
		cluster: &Cluster{Clientset: kube, Config: &rest.Config{Host: "https://api.site.test:6443"}, APIHost: "api.site.test:6443"}}
	kube.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		opts := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		s.mu.Lock()
		s.tails = append(s.tails, *opts.TailLines)
		s.mu.Unlock()
		switch {
		case opts.Container == "sidecar":
			return true, nil, errors.New("container sidecar is waiting to start")
		case opts.Container == "app" && opts.Previous:
			return true, &runtime.Unknown{Raw: []byte("crashed: database refused password " + plantedOld + "\n")}, nil
		case opts.Container == "app":
			return true, &runtime.Unknown{Raw: []byte("started\nregistry login " + plantedRegistry + " ok\nenv " + plantedEnv + "\n")}, nil
		}
		return false, nil, nil // "fake logs"
	})

	s.helm = &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...interface{}) {},
	}
	if !withRelease {
		return s
	}
	ch := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "pseven", Version: "2023.09.25", AppVersion: "6.47.4712"},
		Values: map[string]interface{}{
			"registry": map[string]interface{}{"url": "registry.pseven.io", "username": "", "password": ""},
			"postgres": map[string]interface{}{"host": "", "password": ""},
			"smtp":     map[string]interface{}{"host": "", "password": ""},
		},
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	manifest := `---
# Source: pseven/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: pseven-rl-db
data:
  password: ` + b64(plantedPostgres) + `
stringData:
  smtp: ` + plantedSMTP + `
---
# Source: pseven/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: pseven-rl-cm
data:
  db.conf: "host=db.site password=` + plantedPostgres + `"
  registry: ` + b64(plantedRegistry) + `
`
	for i, r := range []struct {
		status release.Status
		config map[string]interface{}
	}{
		{release.StatusSuperseded, map[string]interface{}{"postgres": map[string]interface{}{"host": "db.site", "password": plantedOld}}},
		{release.StatusDeployed, map[string]interface{}{
			"registry":    map[string]interface{}{"url": "site:5000/pseven", "username": "site-user", "password": plantedRegistry},
			"postgres":    map[string]interface{}{"host": "db.site", "password": plantedPostgres},
			"smtp":        map[string]interface{}{"host": "mail.site", "password": plantedSMTP},
			"secrets":     map[string]interface{}{"djangoSecretKey": plantedKept},
			"siteLicense": plantedOrphan,
		}},
	} {
		rel := &release.Release{Name: manifests.DefaultReleaseName, Namespace: ns, Version: i + 1, Chart: ch, Config: r.config,
			Manifest: manifest, Info: &release.Info{Status: r.status, LastDeployed: helmtime.Now(), Description: "Install complete"}}
		if err := s.helm.Releases.Create(rel); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *supportSite) run(t *testing.T, edit func(*Support)) (*SupportReport, map[string][]byte, error) {
	t.Helper()
	sp := &Support{Output: filepath.Join(s.dir, "support.tar.zst"), WorkDir: s.dir, Cluster: s.cluster, Helm: s.helm}
	if edit != nil {
		edit(sp)
	}
	rep, err := sp.Run(context.Background())
	if err != nil {
		return rep, nil, err
	}
	entries, err := ReadBackup(sp.Output)
	if err != nil {
		t.Fatal(err)
	}
	return rep, entries, nil
}

// minimalBundle writes a bundle with a chart and no images, unsigned.
func minimalBundle(t *testing.T, dir string) string {
	t.Helper()
	chartTgz := []byte("not really a chart")
	m := &bundle.Manifest{
		Tool:           bundle.Tool{Name: "p7bundle", Version: "test"},
		Chart:          bundle.Chart{Name: "pseven", Version: "2023.09.25", AppVersion: "6.47.4712", Path: bundle.ChartDir + "pseven-2023.09.25.tgz", Digest: digest.FromBytes(chartTgz), Size: int64(len(chartTgz))},
		SourceRegistry: manifests.DefaultSourceRegistry, Platforms: []string{"linux/amd64"},
		Secretgen: "registry.pseven.io/pseven-secretgen:6.47.4712",
	}
	path := filepath.Join(dir, "pseven-2023.09.25.tar.zst")
	if _, err := bundle.Write(context.Background(), path, bundle.WriteOptions{Manifest: m, Chart: chartTgz, Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSupportArchiveHoldsNoPlantedSecret(t *testing.T) {
	s := newSupportSite(t, true)
	os.WriteFile(filepath.Join(s.dir, "pseven-2023.09.25.log"), []byte("2026-01-01T00:00:00Z preflight passed\n2026-01-01T00:00:01Z bad line: registry.password="+plantedRegistry+"\n2026-01-01T00:00:02Z done\n"), 0o600)
	os.WriteFile(filepath.Join(s.dir, "other.log"), []byte("not an install log\n"), 0o600)
	bundlePath := minimalBundle(t, t.TempDir())
	var log bytes.Buffer
	rep, entries, err := s.run(t, func(sp *Support) { sp.Bundle, sp.Log = bundlePath, &log })
	if err != nil {
		t.Fatal(err)
	}

	for name, data := range entries {
		for _, p := range planted {
			if bytes.Contains(data, []byte(p)) || bytes.Contains(data, []byte(base64.StdEncoding.EncodeToString([]byte(p)))) {
				t.Errorf("%s holds the planted secret %q:\n%s", name, p, data)
			}
		}
	}
	for _, p := range planted {
		if strings.Contains(log.String(), p) {
			t.Errorf("the log holds %q", p)
		}
	}

	want := []string{"README.txt", "history.json", "release.json", "manifest.yaml", "values.yaml", "pods.yaml", "events.yaml", "nodes.yaml",
		"logs/app-0/setup.log", "logs/app-0/app.log", "logs/app-0/app.previous.log", "install-logs/pseven-2023.09.25.log", "bundle-manifest.json"}
	for _, w := range want {
		if _, ok := entries[supportDir+w]; !ok {
			t.Errorf("no entry %s; have %v", w, rep.Entries)
		}
	}
	if len(entries) != len(want) || len(rep.Entries) != len(want) {
		t.Errorf("entries %v, want %v", rep.Entries, want)
	}
	get := func(name string) string { return string(entries[supportDir+name]) }
	readme := get("README.txt")
	for _, w := range want[1:] {
		if !strings.Contains(readme, supportDir+w) {
			t.Errorf("README does not list %s:\n%s", w, readme)
		}
	}
	if !strings.Contains(readme, "sidecar") || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "sidecar") {
		t.Errorf("the unreadable sidecar log is not noted: %q\n%s", rep.Notes, readme)
	}
	if !strings.Contains(readme, "signature NOT checked") {
		t.Errorf("README does not say the bundle signature is unchecked:\n%s", readme)
	}

	values := get("values.yaml")
	for _, w := range []string{"password: " + manifests.Redacted, "secrets: " + manifests.Redacted, "siteLicense: " + manifests.Redacted, "host: db.site", "username: site-user"} {
		if !strings.Contains(values, w) {
			t.Errorf("values.yaml lacks %q:\n%s", w, values)
		}
	}
	mf := get("manifest.yaml")
	if strings.Contains(mf, "kind: Secret") || !strings.Contains(mf, "# Secret pseven-rl-db: left out") || !strings.Contains(mf, "kind: ConfigMap") {
		t.Errorf("manifest.yaml:\n%s", mf)
	}
	if h := get("history.json"); strings.Count(h, `"revision"`) != 2 || !strings.Contains(h, "superseded") {
		t.Errorf("history.json:\n%s", h)
	}
	if r := get("release.json"); !strings.Contains(r, `"chartVersion": "2023.09.25"`) || rep.Revision != 2 {
		t.Errorf("release.json (revision %d):\n%s", rep.Revision, r)
	}
	if p := get("pods.yaml"); !strings.Contains(p, "value: "+manifests.Redacted) || !strings.Contains(p, "DB_HOST") || !strings.Contains(p, "kind: Pod") {
		t.Errorf("pods.yaml:\n%s", p)
	}
	if e := get("events.yaml"); strings.Index(e, "first event") > strings.Index(e, "second event") || !strings.Contains(e, "first event") {
		t.Errorf("events.yaml not oldest first:\n%s", e)
	}
	if n := get("nodes.yaml"); !strings.Contains(n, "node-1") || !strings.Contains(n, "capacity:") || !strings.Contains(n, "conditions:") {
		t.Errorf("nodes.yaml:\n%s", n)
	}
	if l := get("logs/app-0/app.log"); !strings.Contains(l, "started") || !strings.Contains(l, "registry login "+manifests.Redacted+" ok") {
		t.Errorf("app.log:\n%s", l)
	}
	if l := get("logs/app-0/setup.log"); l != "fake logs" {
		t.Errorf("setup.log = %q", l)
	}
	il := get("install-logs/pseven-2023.09.25.log")
	if !strings.Contains(il, "preflight passed") || !strings.Contains(il, "done") || strings.Contains(il, "registry.password=") {
		t.Errorf("install log:\n%s", il)
	}
	if b := get("bundle-manifest.json"); !strings.Contains(b, `"version": "2023.09.25"`) {
		t.Errorf("bundle-manifest.json:\n%s", b)
	}
	if rep.Scrubbed == 0 {
		t.Error("nothing scrubbed, yet the logs held secrets")
	}
	for _, tl := range s.tails {
		if tl != DefaultSupportTail {
			t.Errorf("logs asked with tail %d, want %d", tl, DefaultSupportTail)
		}
	}

	st, err := os.Stat(rep.Output)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("output %v, %v: want mode 0600", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, ".*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestSupportNeverOverwritesItsOutput(t *testing.T) {
	s := newSupportSite(t, true)
	out := filepath.Join(s.dir, "support.tar.zst")
	os.WriteFile(out, []byte("earlier archive"), 0o600)
	_, _, err := s.run(t, nil)
	if !errors.Is(err, ErrOutput) || !strings.Contains(err.Error(), out) {
		t.Fatalf("Run over an existing output = %v, want ErrOutput naming it", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "earlier archive" {
		t.Errorf("output changed to %q", b)
	}
	missing := filepath.Join(s.dir, "no-such-dir", "support.tar.zst")
	if _, _, err := s.run(t, func(sp *Support) { sp.Output = missing }); !errors.Is(err, ErrOutput) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Run into a missing directory = %v, want ErrOutput naming it", err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, ".*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestSupportWithoutReleaseSaysSoAndGoesOn(t *testing.T) {
	s := newSupportSite(t, false)
	rep, entries, err := s.run(t, func(sp *Support) { sp.Tail = 20 })
	if err != nil {
		t.Fatal(err)
	}
	readme := string(entries[supportDir+"README.txt"])
	if !strings.Contains(readme, "release pseven-rl: not found in namespace pseven-ns") || !strings.Contains(readme, "no install log") {
		t.Errorf("README:\n%s", readme)
	}
	for _, absent := range []string{"history.json", "values.yaml", "manifest.yaml"} {
		if _, ok := entries[supportDir+absent]; ok {
			t.Errorf("%s written for a release that does not exist", absent)
		}
	}
	if _, ok := entries[supportDir+"pods.yaml"]; !ok || rep.Revision != 0 {
		t.Errorf("entries %v, revision %d", rep.Entries, rep.Revision)
	}
	for name, data := range entries {
		// No release: only the kept secrets and the pod env are known.
		for _, p := range []string{plantedKept, plantedEnv, plantedObject} {
			if bytes.Contains(data, []byte(p)) {
				t.Errorf("%s holds %q", name, p)
			}
		}
	}
	for _, tl := range s.tails {
		if tl != 20 {
			t.Errorf("logs asked with tail %d, want 20", tl)
		}
	}
}

func TestSupportUnreachableAPIIsAPreflightError(t *testing.T) {
	s := newSupportSite(t, false)
	s.kube.Discovery().(*fakediscovery.FakeDiscovery).PrependReactor("get", "version", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	_, _, err := s.run(t, nil)
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "api.site.test:6443") {
		t.Fatalf("Run = %v, want ErrPreflight naming the API server", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "support.tar.zst")); !os.IsNotExist(err) {
		t.Errorf("an archive was written: %v", err)
	}
	if _, _, err := s.run(t, func(sp *Support) { sp.Tail = -1 }); !errors.Is(err, ErrOptions) {
		t.Errorf("--tail -1 = %v, want ErrOptions", err)
	}
}

func TestSupportWithoutSecretsRemovesSecretDocuments(t *testing.T) {
	got := withoutSecrets("---\n# Source: a\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: dg==}\n---\napiVersion: v1\nkind: List\nitems: [{kind: Secret, data: {k: x}}]\n---\nkind: Service\nmetadata: {name: svc}\n")
	if strings.Contains(got, "dg==") || strings.Contains(got, "{k: x}") || !strings.Contains(got, "kind: Service") || strings.Count(got, "left out") != 2 {
		t.Errorf("withoutSecrets =\n%s", got)
	}
}
