package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/p7bundle/p7bundle/builder"
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/probe"
	"github.com/p7bundle/p7bundle/internal/testing/randimage"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// These tests run every branch of Install in seconds against fakes: an
// in-memory registry (go-containerregistry), client-go's fake clientset
// and Helm's in-memory release storage. The real-site e2e tests in
// cmd/p7bundle prove the same flow against a real cluster and registry.

var fixtureBundle struct {
	once      sync.Once
	path, pub string
	err       error
}

// testBundle builds, once, a signed bundle of the fixture chart whose
// images are small random ones served by a docker-registry upstream.
func testBundle(t *testing.T) (path, pub string) {
	t.Helper()
	fb := &fixtureBundle
	fb.once.Do(func() { fb.path, fb.pub, fb.err = buildTestBundle() })
	if fb.err != nil {
		t.Fatal(fb.err)
	}
	return fb.path, fb.pub
}

func buildTestBundle() (string, string, error) {
	dir, err := os.MkdirTemp("", "p7bundle-installer-test-")
	if err != nil {
		return "", "", err
	}
	upstream, err := testregistry.Start(context.Background(), testregistry.Options{})
	if err != nil {
		return "", "", err
	}
	defer upstream.Stop()
	chartDir := filepath.Join("..", "testdata", "charts", "pseven")
	if _, err := randimage.PushChart(upstream.Host, chartDir); err != nil {
		return "", "", err
	}
	password := []byte("installer-test")
	key, pub, err := bundle.GenerateKeyPair(filepath.Join(dir, "cosign"), password)
	if err != nil {
		return "", "", err
	}
	out := filepath.Join(dir, "pseven.tar.zst")
	_, err = (&builder.Build{
		Chart: chartDir, Output: out, KeyPath: key, KeyPassword: password, ToolVersion: "test",
		Registry: mirror.RegistryOptions{Mirrors: map[string]string{manifests.DefaultSourceRegistry: upstream.Host}, PlainHTTP: true},
	}).Run(context.Background())
	return out, pub, err
}

// fakeSite is one in-memory site: registry, API, Helm storage.
type fakeSite struct {
	registry *testregistry.Registry
	client   *mirror.Client
	kube     *fake.Clientset
	cluster  *Cluster
	helm     *action.Configuration
	// kubeClient is what Helm applies with; set its errors to fail Helm.
	kubeClient *kubefake.FailingKubeClient
	dir        string
}

func newFakeSite(t *testing.T) *fakeSite {
	t.Helper()
	reg := startRegistry(t, testregistry.Options{Username: "site-user", Password: "site-pass"})
	client, err := mirror.NewClient(mirror.RegistryOptions{PlainHTTP: true, Username: reg.Username, Password: reg.Password})
	if err != nil {
		t.Fatal(err)
	}
	n := node("node-1", "192.0.2.10", "16Gi", "8", true)
	kube := fake.NewSimpleClientset(&n, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: manifests.DefaultNamespace}})
	kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.25.2"}
	kc := &kubefake.FailingKubeClient{PrintingKubeClient: kubefake.PrintingKubeClient{Out: io.Discard}}
	helm := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   kc,
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...interface{}) {},
	}
	dir := t.TempDir()
	return &fakeSite{
		registry: reg, client: client, kube: kube, helm: helm, kubeClient: kc, dir: dir,
		cluster: &Cluster{Clientset: kube, Config: &rest.Config{Host: "https://api.site.test:6443"}, APIHost: "api.site.test:6443"},
	}
}

// install is what `p7bundle install --no-wait` does, against the fakes.
func (s *fakeSite) install(t *testing.T, edit func(*Install)) (*Report, error, string) {
	t.Helper()
	path, pub := testBundle(t)
	var log bytes.Buffer
	in := &Install{
		Bundle: path, Signature: Signature{Key: pub},
		Site:       SiteRegistry{Host: s.registry.Host, PlainHTTP: true, Username: s.registry.Username, Password: s.registry.Password},
		ValuesOut:  filepath.Join(s.dir, "values.airgap.yaml"),
		SecretsOut: filepath.Join(s.dir, "pseven-secrets.yaml"),
		LogFile:    filepath.Join(s.dir, "install.log"),
		BackupDir:  s.dir,
		NoWait:     true,
		SkipDoctor: true, // the fake cluster runs no pods: doctor_test.go and the site tests cover it
		Log:        &log,
		Cluster:    s.cluster, Helm: s.helm, Client: s.client,
	}
	if edit != nil {
		edit(in)
	}
	rep, err := in.Run(context.Background())
	return rep, err, log.String()
}

func (s *fakeSite) history(t *testing.T) []*release.Release {
	t.Helper()
	h, err := s.helm.Releases.History(manifests.DefaultReleaseName)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		t.Fatal(err)
	}
	return h
}

func (s *fakeSite) statuses(t *testing.T) string {
	var out []string
	for _, r := range s.history(t) {
		out = append(out, fmt.Sprintf("%d:%s", r.Version, r.Info.Status))
	}
	return strings.Join(out, " ")
}

func (s *fakeSite) tags(t *testing.T) int {
	t.Helper()
	tags, err := s.registry.AllTags(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(tags)
}

func startRegistry(t *testing.T, opts testregistry.Options) *testregistry.Registry {
	t.Helper()
	reg, err := testregistry.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	return reg
}

func (s *fakeSite) secretsFile(t *testing.T) string {
	return filepath.Join(s.dir, "secrets-given.yaml")
}

func writeSecrets(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInstallFirstThenUpgradeKeepsSecrets(t *testing.T) {
	s := newFakeSite(t)
	given := s.secretsFile(t)
	writeSecrets(t, given, "secrets:\n  dbPassword: first-secret\n")
	rep, err, log := s.install(t, func(in *Install) { in.SecretsFile = given })
	if err != nil {
		t.Fatalf("first install: %v\n%s", err, log)
	}
	if rep.Action != string(StepInstall) || rep.Revision != 1 || rep.Status != "deployed" {
		t.Errorf("first install: action %q revision %d status %q", rep.Action, rep.Revision, rep.Status)
	}
	m, _ := bundle.ReadManifest(fixtureBundle.path)
	if want := len(m.Images); len(rep.Pushed.Images) != want || s.tags(t) < want {
		t.Errorf("pushed %d images, %d tags in the site registry; the bundle has %d", len(rep.Pushed.Images), s.tags(t), want)
	}
	if fi, err := os.Stat(rep.ValuesFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("values file %s: %v", rep.ValuesFile, err)
	}
	kept, err := s.kube.CoreV1().Secrets(manifests.DefaultNamespace).Get(context.Background(), keptSecretName(manifests.DefaultReleaseName), metav1.GetOptions{})
	if err != nil || !strings.Contains(string(kept.Data[secretsKey]), "first-secret") {
		t.Fatalf("--secrets not kept in the cluster: %v", err)
	}

	// The monthly upgrade: no --secrets; the kept ones are reused, the
	// running revision is backed up, nothing is pushed twice.
	rep, err, log = s.install(t, nil)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, log)
	}
	if rep.Action != string(StepUpgrade) || rep.Revision != 2 || rep.Pushed.BlobsPushed != 0 {
		t.Errorf("upgrade: action %q revision %d, %d blobs pushed", rep.Action, rep.Revision, rep.Pushed.BlobsPushed)
	}
	if !strings.Contains(log, "secrets: reusing the secrets of release") || rep.Backup == "" {
		t.Errorf("upgrade did not reuse the kept secrets or back up (backup %q):\n%s", rep.Backup, log)
	}
	rel, _ := s.helm.Releases.Last(manifests.DefaultReleaseName)
	if got := fmt.Sprint(rel.Config["secrets"]); !strings.Contains(got, "first-secret") {
		t.Errorf("upgraded release secrets = %s", got)
	}
	if got := s.statuses(t); got != "1:superseded 2:deployed" {
		t.Errorf("history = %s", got)
	}
	assertNoSecretIn(t, log, "first-secret", "site-pass")
}

func TestInstallFailedUpgradeNeverUninstalls(t *testing.T) {
	s := newFakeSite(t)
	writeSecrets(t, s.secretsFile(t), "secrets:\n  dbPassword: x\n")
	if _, err, log := s.install(t, func(in *Install) { in.SecretsFile = s.secretsFile(t) }); err != nil {
		t.Fatalf("first install: %v\n%s", err, log)
	}
	s.kubeClient.UpdateError = errors.New("admission webhook said no")
	_, err, log := s.install(t, nil)
	if !errors.Is(err, ErrHelm) || !strings.Contains(err.Error(), "revision 1 still runs, nothing was uninstalled") {
		t.Fatalf("failed upgrade: %v\n%s", err, log)
	}
	if got := s.statuses(t); got != "1:deployed 2:failed" {
		t.Errorf("history after a failed upgrade = %s, want revision 1 still deployed", got)
	}
	// The retry is an upgrade from the failed revision, never an uninstall.
	s.kubeClient.UpdateError = nil
	rep, err, log := s.install(t, nil)
	if err != nil || rep.Action != string(StepUpgrade) {
		t.Fatalf("retry: %v %+v\n%s", err, rep, log)
	}
	if got := s.statuses(t); got != "1:superseded 2:failed 3:deployed" {
		t.Errorf("history after the retry = %s", got)
	}
	if strings.Contains(log, "uninstall") && !strings.Contains(log, "nothing is uninstalled") {
		t.Errorf("the retry talks of uninstalling:\n%s", log)
	}
}

func TestInstallFailedFirstInstallIsCleanedUp(t *testing.T) {
	s := newFakeSite(t)
	writeSecrets(t, s.secretsFile(t), "secrets:\n  dbPassword: x\n")
	s.kubeClient.CreateError = errors.New("quota exceeded")
	if _, err, _ := s.install(t, func(in *Install) { in.SecretsFile = s.secretsFile(t) }); !errors.Is(err, ErrHelm) {
		t.Fatalf("failing first install: %v", err)
	}
	if got := s.statuses(t); got != "1:failed" {
		t.Fatalf("history = %s", got)
	}
	s.kubeClient.CreateError = nil
	rep, err, log := s.install(t, nil) // secrets kept from the first attempt
	if err != nil || rep.Action != string(StepCleanInstall) || rep.Status != "deployed" {
		t.Fatalf("retry: %v %+v\n%s", err, rep, log)
	}
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	s := newFakeSite(t)
	rep, err, log := s.install(t, func(in *Install) { in.DryRun = true })
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, log)
	}
	if rep.Action != "install (dry run)" || rep.Pushed != nil || len(rep.Lint.Offenders) == 0 {
		t.Errorf("dry run report: action %q pushed %v offenders %d (the images are not pushed, so lint must say so)", rep.Action, rep.Pushed, len(rep.Lint.Offenders))
	}
	if n := s.tags(t); n != 0 {
		t.Errorf("dry run left %d tags in the site registry", n)
	}
	if h := s.history(t); len(h) != 0 {
		t.Errorf("dry run created release revisions: %s", s.statuses(t))
	}
	if _, err := s.kube.CoreV1().Secrets(manifests.DefaultNamespace).Get(context.Background(), keptSecretName(manifests.DefaultReleaseName), metav1.GetOptions{}); err == nil {
		t.Errorf("dry run kept secrets in the cluster")
	}
}

// A release installed without p7bundle: its secrets are the values no
// chart defines, and an upgrade reuses them.
func TestInstallReusesSecretsOfAForeignRelease(t *testing.T) {
	s := newFakeSite(t)
	path, _ := testBundle(t)
	_, chartArchive, err := bundle.ReadChart(path)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := manifests.LoadChartArchive("chart", chartArchive)
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(s.helm)
	in.ReleaseName, in.Namespace = manifests.DefaultReleaseName, manifests.DefaultNamespace
	if _, err := in.Run(ch.Chart, map[string]interface{}{"secrets": map[string]interface{}{"dbPassword": "foreign-secret"}}); err != nil {
		t.Fatal(err)
	}
	rep, err, log := s.install(t, nil)
	if err != nil || rep.Action != string(StepUpgrade) {
		t.Fatalf("upgrade of a foreign release: %v\n%s", err, log)
	}
	if !strings.Contains(log, "reusing the deployed release's values [secrets]") {
		t.Errorf("secrets not taken from the deployed values:\n%s", log)
	}
	rel, _ := s.helm.Releases.Last(manifests.DefaultReleaseName)
	if got := fmt.Sprint(rel.Config["secrets"]); !strings.Contains(got, "foreign-secret") {
		t.Errorf("upgraded release secrets = %s", got)
	}
}

// The secretgen branch: the Job's pod fails; nothing is installed and no
// secrets file appears.
func TestInstallSecretgenFailureStopsBeforeHelm(t *testing.T) {
	s := newFakeSite(t)
	s.kube.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		job := a.(k8stesting.CreateAction).GetObject().(interface{ GetName() string })
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: job.GetName() + "-abcde", Namespace: a.GetNamespace(), Labels: map[string]string{"job-name": job.GetName()}},
			Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
				Name: "secretgen", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 2}},
			}}},
		}
		return false, nil, s.kube.Tracker().Add(pod)
	})
	_, err, log := s.install(t, nil)
	if !errors.Is(err, ErrSecrets) || !strings.Contains(err.Error(), "secretgen") {
		t.Fatalf("secretgen failure: %v\n%s", err, log)
	}
	if h := s.history(t); len(h) != 0 {
		t.Errorf("Helm ran after secretgen failed: %s", s.statuses(t))
	}
	if _, err := os.Stat(filepath.Join(s.dir, "pseven-secrets.yaml")); !os.IsNotExist(err) {
		t.Errorf("a secrets file was written: %v", err)
	}
}

func TestInstallRefusesBadOptions(t *testing.T) {
	s := newFakeSite(t)
	for name, edit := range map[string]func(*Install){
		"no key":             func(in *Install) { in.Key = "" },
		"registry with path": func(in *Install) { in.Site.Host = "registry.site/x" },
		"password, no user":  func(in *Install) { in.Site.Username = "" },
		"existing secrets file": func(in *Install) {
			writeSecrets(t, in.SecretsOut, "secrets: {}\n")
		},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err, _ := s.install(t, edit); err == nil {
				t.Fatal("accepted")
			}
			if h := s.history(t); len(h) != 0 {
				t.Errorf("release revisions after a refused install: %s", s.statuses(t))
			}
		})
	}
}

func assertNoSecretIn(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("secret %q printed", s)
		}
	}
}

// install --plain-http --registry HOST (no port) talks to HOST:80, through
// the egress guard Install builds itself (once it allowed HOST:443 only).
func TestInstallPlainHTTPRegistryWithoutPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.2:80")
	if err != nil {
		t.Skipf("127.0.0.2:80 is taken, no port-less registry here: %v", err)
	}
	l.Close()
	reg := startRegistry(t, testregistry.Options{Addr: "127.0.0.2:80"})
	s := newFakeSite(t)
	s.registry = reg
	writeSecrets(t, s.secretsFile(t), "secrets:\n  dbPassword: x\n")
	rep, err, log := s.install(t, func(in *Install) {
		in.SecretsFile = s.secretsFile(t)
		in.Client = nil // built by Install, behind its guard
		in.Site.Host = "127.0.0.2"
		in.Site.Username, in.Site.Password = "", ""
	})
	if err != nil {
		t.Fatalf("install --plain-http --registry 127.0.0.2: %v\n%s", err, log)
	}
	if rep.Pushed == nil || len(rep.Pushed.Images) == 0 || s.tags(t) == 0 {
		t.Errorf("nothing pushed to 127.0.0.2:80")
	}
	doc, _ := os.ReadFile(rep.ValuesFile)
	if !strings.Contains(string(doc), "url: 127.0.0.2/pseven") {
		t.Errorf("values do not point at 127.0.0.2/pseven:\n%s", doc)
	}
}

// TestInstallTamperedBlobTagsNothing: a byte changed inside a layer passes
// the table of contents check (the manifest is intact) and is caught as
// the blob streams to the registry: the install stops, nothing is tagged,
// no release is made.
func TestInstallTamperedBlobTagsNothing(t *testing.T) {
	s := newFakeSite(t)
	path, pub := testBundle(t)
	data := mustReadFile(t, path)
	v, err := bundle.LoadVerifier(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(s.dir, "tampered.tar.zst")
	found := false
	// From the middle (layers) on, the first flip that changes content but
	// leaves the signed head readable.
	for off := len(data) / 2; off < len(data) && !found; off += 997 {
		b := append([]byte(nil), data...)
		b[off] ^= 0x10
		os.WriteFile(tampered, b, 0o644)
		a, err := bundle.OpenVerified(tampered, v)
		if err != nil {
			continue
		}
		a.Close()
		_, err = bundle.Verify(context.Background(), tampered, bundle.VerifyOptions{})
		found = errors.Is(err, bundle.ErrCorrupt)
	}
	if !found {
		t.Fatal("no flip found that keeps the head and changes a blob")
	}
	_, err, log := s.install(t, func(in *Install) { in.Bundle = tampered })
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("install of a tampered bundle = %v\n%s", err, log)
	}
	if n := s.tags(t); n != 0 {
		t.Errorf("%d tags after a tampered install", n)
	}
	if h := s.history(t); len(h) != 0 {
		t.Errorf("a release was made: %s", s.statuses(t))
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The guide's version policy: 1.22.0 to 1.25.2 tested, newer allowed with a
// warning (doctor WARNs), older refused naming the version.
func TestPreflightKubernetesVersions(t *testing.T) {
	for _, tc := range []struct {
		server, err, warning string
	}{
		{server: "v1.21.14", err: "preflight failed: Kubernetes v1.21.14 is older than 1.22.0, the oldest pSeven Enterprise supports"},
		{server: "v1.22.0"},
		{server: "v1.22.16"},
		{server: "v1.25.2"},
		{server: "v1.25.3", warning: "Kubernetes v1.25.3 is newer than 1.25.2, the newest version the vendor tested"},
		{server: "v1.37.0", warning: "Kubernetes v1.37.0 is newer than 1.25.2, the newest version the vendor tested"},
		{server: "v0.0.0-master+$Format:%H$", err: "preflight failed: Kubernetes v0.0.0-master+$Format:%H$ is older than 1.22.0"},
		{server: "unknown", err: `preflight failed: Kubernetes API https://api.site.test:6443 reports version "unknown"`},
	} {
		n := node("node-1", "192.0.2.10", "16Gi", "8", true)
		kube := fake.NewSimpleClientset(&n)
		kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: tc.server}
		c := &Cluster{Clientset: kube, Config: &rest.Config{Host: "https://api.site.test:6443"}}
		pf, err := c.Check(context.Background(), "ns", true)
		switch {
		case tc.err != "":
			if err == nil || !errors.Is(err, ErrPreflight) || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one starting %q", tc.server, err, tc.err)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", tc.server, err)
			continue
		}
		doctor := kubernetesCheck(pf)
		if tc.warning == "" {
			if len(pf.Warnings) != 0 || doctor.Status != probe.Pass || doctor.Guide != "1.22.0 to 1.25.2 tested" {
				t.Errorf("%s: warnings %q, doctor %+v", tc.server, pf.Warnings, doctor)
			}
		} else if !slices.Equal(pf.Warnings, []string{tc.warning}) || doctor.Status != probe.Warn || doctor.Detail != tc.warning {
			t.Errorf("%s: warnings %q, doctor %+v; want %q", tc.server, pf.Warnings, doctor, tc.warning)
		}
	}
}

// An install under --require-approval records the approval it was met
// with in its report and log; without one nothing is pushed or installed.
func TestInstallRecordsApprovals(t *testing.T) {
	s := newFakeSite(t)
	path, _ := testBundle(t)
	m, err := bundle.ReadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fileDigest, err := digest.FromReader(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	key, approverPub, err := bundle.GenerateKeyPair(filepath.Join(keys, "security"), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, err := bundle.GenerateKeyPair(filepath.Join(keys, "other"), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := bundle.LoadSigner(context.Background(), key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	line, err := bundle.Approve(context.Background(), signer, m, filepath.Base(path), fileDigest.String(),
		bundle.ApproveOptions{Sites: []string{"plant-a"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), Note: "CAB-9"})
	if err != nil {
		t.Fatal(err)
	}
	approvals := filepath.Join(keys, "approvals.jsonl")
	os.WriteFile(approvals, line, 0o644)
	given := s.secretsFile(t)
	writeSecrets(t, given, "secrets:\n  dbPassword: approved\n")

	_, err, _ = s.install(t, func(in *Install) {
		in.Signature.RequireApprovals, in.Signature.Approvals, in.Signature.Site = []string{approverPub, otherPub}, approvals, "plant-a"
	})
	if !errors.Is(err, bundle.ErrApproval) || !strings.Contains(err.Error(), otherPub+" has not approved") {
		t.Fatalf("install without the second approval: %v", err)
	}
	if s.tags(t) != 0 || len(s.history(t)) != 0 {
		t.Fatalf("a refused install pushed %d tags, made %d releases", s.tags(t), len(s.history(t)))
	}

	rep, err, log := s.install(t, func(in *Install) {
		in.Signature.RequireApprovals, in.Signature.Approvals, in.Signature.Site = []string{approverPub}, approvals, "plant-a"
		in.SecretsFile = given
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Approved{Key: approverPub, Approver: "", File: approvals, Line: 1, Digest: digest.FromBytes(bytes.TrimSpace(line)).String(), Note: "CAB-9"}
	if len(rep.Approvals) != 1 {
		t.Fatalf("report approvals: %+v", rep.Approvals)
	}
	got := rep.Approvals[0]
	want.Approver, want.NotAfter = got.Approver, got.NotAfter
	if got != want || !strings.HasPrefix(got.Approver, "sha256:") {
		t.Errorf("report approval %+v, want %+v", got, want)
	}
	logFile := string(mustReadFile(t, filepath.Join(s.dir, "install.log")))
	if !strings.Contains(log, "approval: "+approvals+" line 1 by "+approverPub) || !strings.Contains(logFile, want.Digest) {
		t.Errorf("the approval is not in the output and the log file:\n%s\n---\n%s", log, logFile)
	}
	// The revision says who approved it (helm history shows it), and the
	// backup an upgrade takes of it keeps that.
	described := fmt.Sprintf("Install complete; approved by %s (approvals.jsonl line 1, %s)", got.Approver, want.Digest)
	if h := s.history(t); len(h) != 1 || h[0].Info.Description != described {
		t.Fatalf("revision description: %q, want %q", h[0].Info.Description, described)
	}
	rep, err, log = s.install(t, func(in *Install) {
		in.Signature.RequireApprovals, in.Signature.Approvals, in.Signature.Site = []string{approverPub}, approvals, "plant-a"
	})
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, log)
	}
	if h := s.history(t); len(h) != 2 || h[1].Info.Description != strings.Replace(described, "Install", "Upgrade", 1) {
		t.Errorf("upgraded revision description: %q", h[len(h)-1].Info.Description)
	}
	if hist := readBackup(t, rep.Backup)[backupHistory]; !strings.Contains(hist, described) {
		t.Errorf("backup %s history does not name the approval:\n%s", rep.Backup, hist)
	}
}
