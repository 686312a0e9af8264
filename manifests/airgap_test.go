package manifests

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite golden files")

const site = "reg.site:5000"

func airgapOpts() ValuesOptions {
	return ValuesOptions{SiteRegistry: site, Prefix: "pseven", Username: "site-user", Password: "site-pass",
		Sizing: &Sizing{Workers: 3, MemoryMi: 8192, CPUMilli: 4000}}
}

func TestAirgapValuesKeepsAdminFile(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	admin, err := os.ReadFile("../testdata/values/admin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := AirgapValuesFor(c, []ValuesFile{{Name: "admin.yaml", Data: admin}}, Sets{Values: []string{"smtp.host=mail.acme.internal"}}, airgapOpts())
	if err != nil {
		t.Fatal(err)
	}
	golden := "../testdata/values/admin.airgap.golden.yaml"
	if *update {
		os.WriteFile(golden, got.Document, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Document) != string(want) {
		t.Errorf("values.airgap.yaml differs from %s (run with -update to accept):\n%s", golden, got.Document)
	}
	// The admin's comments and key order survive.
	doc := string(got.Document)
	for _, want := range []string{"# Keep this order: postgres first", "# PgBouncer in front", "# Our reverse proxy."} {
		if !strings.Contains(doc, want) {
			t.Errorf("comment %q lost", want)
		}
	}
	if strings.Index(doc, "postgres:") > strings.Index(doc, "entrypoint:") {
		t.Error("key order changed")
	}
	v := got.Values
	checks := map[string]interface{}{
		"registry.url":                   site + "/pseven",
		"registry.username":              "site-user",
		"image.appserver":                site + "/pseven/pseven-app",
		"image.edgerouter":               site + "/pseven/pseven-edgerouter:6.47.4712",
		"redis.image.registry":           site + "/pseven",
		"pseven-cache.image.repository":  site + "/pseven/pseven-memcached",
		"smtp.host":                      "mail.acme.internal",
		"sizing.htcondorexecuteReplicas": float64(2), // the admin's, not the cluster's 3
		"sizing.htcondorexecuteResources.requests.memory": "8192Mi",
		"sizing.htcondorexecuteResources.requests.cpu":    "4000m",
	}
	for path, want := range checks {
		if got := lookupDotted(v, path); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	if strings.Join(got.Filled, ",") != "sizing.htcondorexecuteResources.requests.memory=8192Mi,sizing.htcondorexecuteResources.requests.cpu=4000m" {
		t.Errorf("Filled = %v", got.Filled)
	}

	// Rendered with these values, every image is in the site registry.
	images, offenders, err := AirgapLint(c, got.Values, LintOptions{SitePath: site + "/pseven"})
	if err != nil {
		t.Fatal(err)
	}
	if want := templateImages(t, c); len(offenders) != 0 || len(images) != want {
		t.Errorf("lint: %d images (the chart renders %d), offenders %v", len(images), want, offenders)
	}
	for _, img := range images {
		if !strings.HasPrefix(img.Ref, site+"/pseven/") {
			t.Errorf("rendered image %s", img.Ref)
		}
	}
}

func TestAirgapValuesWithoutAdminFile(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	got, err := AirgapValuesFor(c, nil, Sets{}, airgapOpts())
	if err != nil {
		t.Fatal(err)
	}
	// Starts from the chart's values.yaml, with its comments.
	if !strings.Contains(string(got.Document), "# Docker Registry that stores the pSeven Enterprise images.") {
		t.Error("chart comments lost")
	}
	if lookupDotted(got.Values, "sizing.htcondorexecuteReplicas") != float64(3) {
		t.Errorf("replicas not filled from the cluster: %v", lookupDotted(got.Values, "sizing.htcondorexecuteReplicas"))
	}
	// Checked on the text, not with the rewrite's own walker.
	for name, doc := range map[string][]byte{"document": got.Document, "values": mustYAML(t, got.Values)} {
		for i, line := range strings.Split(string(doc), "\n") {
			if strings.Contains(line, "registry.pseven.io/") || strings.HasSuffix(strings.TrimSpace(line), ": registry.pseven.io") {
				t.Errorf("%s line %d still names the source registry: %s", name, i+1, line)
			}
		}
	}
}

func mustYAML(t *testing.T, v interface{}) []byte {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAirgapLintNamesOffenders(t *testing.T) {
	// A chart with a template that hard-codes an outside image.
	dir := t.TempDir()
	copyDir(t, "../testdata/charts/pseven", filepath.Join(dir, "pseven"))
	os.WriteFile(filepath.Join(dir, "pseven", "templates", "planted.yaml"), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: planted
spec:
  containers:
    - name: sidecar
      image: quay.io/evil/sidecar:1.0
`), 0o644)
	c, err := LoadChart(filepath.Join(dir, "pseven"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := AirgapValuesFor(c, nil, Sets{Values: []string{"image.files=docker.io/library/busybox:1.36"}}, airgapOpts())
	if err != nil {
		t.Fatal(err)
	}
	vals := got.Values
	vals["planted"] = map[string]interface{}{"note": "pull from registry.pseven.io/pseven-app"}
	_, offenders, err := AirgapLint(c, vals, LintOptions{SitePath: site + "/pseven"})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, o := range offenders {
		all = append(all, o.String())
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{"quay.io/evil/sidecar:1.0 (pseven/templates/planted.yaml Pod/planted container sidecar)", "docker.io/library/busybox:1.36 (pseven/templates/files.yaml DaemonSet/pseven-rl-files container files)", "planted.note (values): still mentions registry.pseven.io"} {
		if !strings.Contains(joined, want) {
			t.Errorf("offenders lack %q:\n%s", want, joined)
		}
	}
}

func lookupDotted(v map[string]interface{}, path string) interface{} {
	var p []interface{}
	for _, s := range strings.Split(path, ".") {
		p = append(p, s)
	}
	return lookup(v, p)
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Discovery, rewrite and lint agree on what names the source registry: a
// URL of the vendor's site is not an image, so it is neither moved nor an
// offender; a reference or the bare host is both.
func TestRewriteAndLintAgreeWithDiscovery(t *testing.T) {
	c, err := LoadChart(filepath.Join("..", "testdata", "charts", "pseven"))
	if err != nil {
		t.Fatal(err)
	}
	sets := []string{
		"docs=see https://registry.pseven.io/docs/x",
		"note=pull registry.pseven.io/pseven/pseven-app:1",
		"mirrorHost=registry.pseven.io",
	}
	got, err := AirgapValuesFor(c, nil, Sets{Values: sets}, airgapOpts())
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Values["docs"]; v != "see https://registry.pseven.io/docs/x" {
		t.Errorf("docs URL rewritten to %q", v)
	}
	for _, k := range []string{"note", "mirrorHost"} {
		if v, _ := got.Values[k].(string); strings.Contains(v, "registry.pseven.io") {
			t.Errorf("%s not moved: %q", k, v)
		}
	}
	if refs := FindRegistryRefs("see https://registry.pseven.io/docs/x", "registry.pseven.io"); len(refs) != 0 {
		t.Errorf("discovery finds %v in a URL", refs)
	}
	_, offenders, err := AirgapLint(c, got.Values, LintOptions{SitePath: site + "/pseven"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offenders {
		if strings.Contains(o.String(), "docs") {
			t.Errorf("lint reports the docs URL: %s", o)
		}
	}
	got.Values["planted"] = "registry.pseven.io/pseven/x:1"
	_, offenders, _ = AirgapLint(c, got.Values, LintOptions{SitePath: site + "/pseven"})
	found := false
	for _, o := range offenders {
		found = found || strings.Contains(o.String(), "planted (values): still mentions registry.pseven.io")
	}
	if !found {
		t.Errorf("lint misses a reference planted after the rewrite: %v", offenders)
	}
}

// templateImages counts the images discovery found in the chart's
// templates: what a render with every image moved must show.
func templateImages(t *testing.T, c *Chart) int {
	t.Helper()
	found, err := DiscoverImages(c, DiscoverOptions{SourceRegistry: DefaultSourceRegistry})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, img := range found {
		for _, src := range img.Sources {
			if strings.HasPrefix(src, "template:") {
				n++
				break
			}
		}
	}
	if n == 0 {
		t.Fatal("discovery found no rendered image")
	}
	return n
}
