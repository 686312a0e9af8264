package manifests

import (
	"bytes"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
)

// nextMonth is the fixture chart as next month's release: new appVersion,
// the edgerouter's explicit tag moved with it.
func nextMonth(t *testing.T) *Chart {
	t.Helper()
	c := mustLoad(t, fixtureDir)
	c.Chart.Metadata.Version, c.Chart.Metadata.AppVersion = "2023.10.30", "6.48.5000"
	c.AppVersion = "6.48.5000"
	for _, f := range c.Chart.Raw {
		if f.Name == chartutil.ValuesfileName {
			f.Data = bytes.ReplaceAll(f.Data, []byte("pseven-edgerouter:6.47.4712"), []byte("pseven-edgerouter:6.48.5000"))
		}
	}
	c.Chart.Values["image"].(map[string]interface{})["edgerouter"] = "registry.pseven.io/pseven-edgerouter:6.48.5000"
	return c
}

func bundleRefs(t *testing.T, c *Chart) []string {
	t.Helper()
	images, err := DiscoverImages(c, DiscoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, img := range images {
		refs = append(refs, img.Ref)
	}
	return refs
}

// The monthly upgrade: last month's values (what Helm keeps as the
// release's config) carried over, this month's images everywhere.
func TestUpgradeCarriesValuesAndMovesImages(t *testing.T) {
	v1chart, v2chart := mustLoad(t, fixtureDir), nextMonth(t)
	sitePath := site + "/pseven"
	month1, err := AirgapValuesFor(v1chart, nil, Sets{Values: []string{"postgres.host=db.acme.internal", "smtp.password=hunter2-smtp", "entrypoint.webHttp=31080"}}, airgapOpts())
	if err != nil {
		t.Fatal(err)
	}
	config := copyValues(month1.Values)
	config["secrets"] = map[string]interface{}{"djangoSecretKey": "kept-apart-0123456789"}

	v2defaults, err := chartutil.CoalesceValues(v2chart.Chart, map[string]interface{}{})
	if err != nil {
		t.Fatal(err)
	}
	carried := UserValues(config, []map[string]interface{}{v1chart.Chart.Values, v2defaults.AsMap()}, "", sitePath, "secrets")
	for path, want := range map[string]interface{}{
		"postgres.host":        "db.acme.internal",
		"smtp.password":        "hunter2-smtp",
		"entrypoint.webHttp":   float64(31080),
		"registry.url":         nil, // set anew
		"registry.password":    nil,
		"image.appserver":      nil, // a default, moved: not the admin's choice
		"image.edgerouter":     nil,
		"redis.image.tag":      nil,
		"secrets":              nil, // kept apart
		"postgres.port":        nil, // the default
		"storage.nfs.server":   nil,
		"entrypoint.adminHttp": nil,
	} {
		if got := lookupDotted(carried, path); got != want {
			t.Errorf("carried %s = %#v, want %#v", path, got, want)
		}
	}

	opts := airgapOpts()
	opts.Carried, opts.BundleImages = carried, bundleRefs(t, v2chart)
	month2, err := AirgapValuesFor(v2chart, nil, Sets{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]interface{}{
		"postgres.host":      "db.acme.internal",
		"smtp.password":      "hunter2-smtp",
		"entrypoint.webHttp": float64(31080),
		"image.edgerouter":   sitePath + "/pseven-edgerouter:6.48.5000",
		"registry.url":       sitePath,
		"registry.password":  "site-pass",
	} {
		if got := lookupDotted(month2.Values, path); got != want {
			t.Errorf("month 2 %s = %#v, want %#v", path, got, want)
		}
	}
	if _, offenders, err := AirgapLint(v2chart, month2.Values, LintOptions{SitePath: sitePath, BundleImages: opts.BundleImages}); err != nil || len(offenders) != 0 {
		t.Errorf("month 2 lint: %v %v", offenders, err)
	}

	// The admin passes last month's values.airgap.yaml: its pinned
	// edgerouter tag is moved to this bundle's and said so.
	withOld, err := AirgapValuesFor(v2chart, []ValuesFile{{Name: "values.airgap.yaml", Data: month1.Document}}, Sets{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := lookupDotted(withOld.Values, "image.edgerouter"); got != sitePath+"/pseven-edgerouter:6.48.5000" {
		t.Errorf("image.edgerouter = %v", got)
	}
	if len(withOld.Repointed) != 1 || withOld.Repointed[0].Path != "image.edgerouter" || withOld.Repointed[0].To != sitePath+"/pseven-edgerouter:6.48.5000" {
		t.Errorf("Repointed = %+v", withOld.Repointed)
	}
	if got := lookupDotted(withOld.Values, "redis.image.tag"); got != "7.0.12" {
		t.Errorf("redis.image.tag = %v: a tag the bundle carries must stay", got)
	}

	// Without the move, lint names the key pinning an image of another release.
	opts.BundleImages = nil
	pinned, err := AirgapValuesFor(v2chart, []ValuesFile{{Name: "values.airgap.yaml", Data: month1.Document}}, Sets{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, offenders, err := AirgapLint(v2chart, pinned.Values, LintOptions{SitePath: sitePath, BundleImages: bundleRefs(t, v2chart)})
	if err != nil {
		t.Fatal(err)
	}
	if len(offenders) != 1 || offenders[0].What != sitePath+"/pseven-edgerouter:6.47.4712" || !strings.Contains(offenders[0].Problem, "pinned by values image.edgerouter") {
		t.Errorf("offenders = %v", offenders)
	}

	// The diff an admin reads before the upgrade: no secret value in it.
	diff := DiffValues(config, month2.Values, "secrets")
	text := strings.Join(diff, "\n")
	for _, want := range []string{
		"~ image.edgerouter: " + sitePath + "/pseven-edgerouter:6.47.4712 -> " + sitePath + "/pseven-edgerouter:6.48.5000",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("diff lacks %q:\n%s", want, text)
		}
	}
	for _, secret := range []string{"hunter2-smtp", "site-pass", "kept-apart", "secrets."} {
		if strings.Contains(text, secret) {
			t.Errorf("diff shows %q:\n%s", secret, text)
		}
	}
	changed := DiffValues(map[string]interface{}{"smtp": map[string]interface{}{"password": "a-old-one", "host": "x"}},
		map[string]interface{}{"smtp": map[string]interface{}{"password": "b-new-one"}, "extra": 1})
	if strings.Join(changed, "|") != "+ extra: 1|- smtp.host|~ smtp.password: (changed)" {
		t.Errorf("diff = %q", changed)
	}
}

func TestUserValuesOfAnUnchangedReleaseIsEmpty(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	month1, err := AirgapValuesFor(c, nil, Sets{}, ValuesOptions{SiteRegistry: site, Prefix: "pseven", BundleImages: bundleRefs(t, c)})
	if err != nil {
		t.Fatal(err)
	}
	if got := lookupDotted(month1.Values, "image.appserver"); got != site+"/pseven/pseven-app:6.47.4712" {
		t.Errorf("image.appserver = %v: the tag build defaulted is written out", got)
	}
	defaults, err := chartutil.CoalesceValues(c.Chart, map[string]interface{}{})
	if err != nil {
		t.Fatal(err)
	}
	if got := UserValues(month1.Values, []map[string]interface{}{c.Chart.Values, defaults.AsMap()}, "", site+"/pseven"); len(got) != 0 {
		t.Errorf("nothing was chosen, yet carried: %v", got)
	}
}

// A chart that decides "is there a tag?" by looking for ':' breaks on a
// site registry with a port unless the tag is written out; one that
// always appends the tag gets two if it is. Install picks per value.
func TestUntaggedValuesTakeTheFormTheTemplateNeeds(t *testing.T) {
	c := mustLoad(t, "../testdata/charts/pseven-alt")
	refs := bundleRefs(t, c)
	sitePath := site + "/pseven"
	got, err := AirgapValuesFor(c, nil, Sets{}, ValuesOptions{SiteRegistry: site, Prefix: "pseven", BundleImages: refs})
	if err != nil {
		t.Fatal(err)
	}
	if v := lookupDotted(got.Values, "image.app"); v != sitePath+"/pseven-app:7.1.100" {
		t.Errorf("image.app = %v, want the tag written out", v)
	}
	if v := lookupDotted(got.Values, "image.worker"); v != sitePath+"/pseven-worker" {
		t.Errorf("image.worker = %v, want it left untagged", v)
	}
	said := strings.Join(got.TagForms, "\n")
	if !strings.Contains(said, "image.worker: left untagged") || !strings.Contains(said, "image.app: tag written out") {
		t.Errorf("TagForms = %q", got.TagForms)
	}
	images, offenders, err := AirgapLint(c, got.Values, LintOptions{SitePath: sitePath, BundleImages: refs})
	if err != nil || len(offenders) != 0 || len(images) != 2 {
		t.Errorf("lint: %v %v %v", images, offenders, err)
	}
	// Written the old way (untagged everywhere), the lint sees the break.
	old, err := AirgapValuesFor(c, nil, Sets{}, ValuesOptions{SiteRegistry: site, Prefix: "pseven"})
	if err != nil {
		t.Fatal(err)
	}
	_, offenders, _ = AirgapLint(c, old.Values, LintOptions{SitePath: sitePath, BundleImages: refs})
	if len(offenders) != 1 || offenders[0].What != sitePath+"/pseven-app" {
		t.Errorf("untagged with a port: offenders %v", offenders)
	}
}
