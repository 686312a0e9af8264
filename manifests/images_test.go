package manifests

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
)

// fixtureImages is the oracle of testdata/charts/README.md.
var fixtureImages = []Image{
	{Ref: "registry.pseven.io/pseven-app:6.47.4712", Sources: []string{
		"template:pseven/templates/appserver.yaml Deployment/pseven-rl-appserver container appserver",
		"template:pseven/templates/appserver.yaml Deployment/pseven-rl-appserver initContainer prepare",
		"template:pseven/templates/appworker.yaml Deployment/pseven-rl-appworkerblockjobs container appworker",
		"template:pseven/templates/post1-makeextnodepkgs.yaml Job/pseven-rl-post1-makeextnodepkgs container makeextnodepkgs",
		"values:image.appserver",
		"values:image.appworker",
	}},
	{Ref: "registry.pseven.io/pseven-blocknetworkgate:6.47.4712", Sources: []string{
		"values:image.blocknetworkgate",
	}},
	{Ref: "registry.pseven.io/pseven-edgerouter:6.47.4712", Sources: []string{
		"template:pseven/templates/edgerouter.yaml Deployment/pseven-rl-edgerouter container edgerouter",
		"values:image.edgerouter",
	}},
	{Ref: "registry.pseven.io/pseven-files:6.47.4712", Sources: []string{
		"template:pseven/templates/files.yaml DaemonSet/pseven-rl-files container files",
		"values:image.files",
	}},
	{Ref: "registry.pseven.io/pseven-htcondor:6.47.4712", Sources: []string{
		"template:pseven/templates/htcondor.yaml StatefulSet/pseven-rl-htcondorexecute container htcondorexecute",
		"template:pseven/templates/htcondor.yaml StatefulSet/pseven-rl-htcondormanager container htcondormanager",
		"values:image.htcondorexecute",
		"values:image.htcondormanager",
	}},
	{Ref: "registry.pseven.io/pseven-keycloak:6.47.4712", Sources: []string{
		"template:pseven/templates/keycloak.yaml Pod/pseven-rl-keycloak container keycloak",
		"values:image.keycloak",
	}},
	{Ref: "registry.pseven.io/pseven-memcached:1.6.21", Sources: []string{
		"template:pseven/charts/pseven-cache/templates/memcached.yaml Deployment/pseven-rl-memcached container memcached",
		"values:pseven-cache.image (subchart pseven-cache)",
	}},
	{Ref: "registry.pseven.io/pseven-redis:7.0.12", Sources: []string{
		"template:pseven/templates/redis.yaml StatefulSet/pseven-rl-redis container redis",
		"values:redis.image",
	}},
	{Ref: "registry.pseven.io/pseven-secretgen:6.47.4712", Sources: []string{
		"secretgen",
	}},
	{Ref: "registry.pseven.io/pseven-upkeep:6.47.4712", Sources: []string{
		"template:pseven/templates/upkeep.yaml CronJob/pseven-rl-upkeep container upkeep",
	}},
}

func diffImages(t *testing.T, got, want []Image) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	g, w := map[string][]string{}, map[string][]string{}
	for _, i := range got {
		g[i.Ref] = i.Sources
	}
	for _, i := range want {
		w[i.Ref] = i.Sources
	}
	for ref, ws := range w {
		gs, ok := g[ref]
		switch {
		case !ok:
			t.Errorf("missing %s (sources %q)", ref, ws)
		case !reflect.DeepEqual(gs, ws):
			t.Errorf("%s sources:\n got %q\nwant %q", ref, gs, ws)
		}
	}
	for ref, gs := range g {
		if _, ok := w[ref]; !ok {
			t.Errorf("unexpected %s (sources %q)", ref, gs)
		}
	}
	if len(g) == len(got) && len(w) == len(want) && !t.Failed() {
		t.Errorf("same images, different order:\n got %v\nwant %v", refs(got), refs(want))
	}
}

func refs(imgs []Image) []string {
	var out []string
	for _, i := range imgs {
		out = append(out, i.Ref)
	}
	return out
}

func TestDiscoverImagesFixture(t *testing.T) {
	tests := []struct {
		name string
		path string
	}{
		{"directory", fixtureDir},
		{"helm-packaged tgz", packagedFixture(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.path)
			got, err := DiscoverImages(c, DiscoverOptions{})
			if err != nil {
				t.Fatal(err)
			}
			diffImages(t, got, fixtureImages)

			// Discovery leaves the loaded chart alone (rendering prunes
			// disabled subcharts from its own copy), so it is repeatable.
			if n := len(c.Chart.Dependencies()); n != 1 {
				t.Errorf("chart has %d subcharts after discovery, want 1", n)
			}
			again, err := DiscoverImages(c, DiscoverOptions{})
			if err != nil {
				t.Fatal(err)
			}
			diffImages(t, again, fixtureImages)
		})
	}
}

// withSource returns imgs with src added to the image ref (inserted if new).
func withSource(imgs []Image, ref, src string) []Image {
	out := cloneImages(imgs)
	for i := range out {
		if out[i].Ref == ref {
			out[i].Sources = append(out[i].Sources, src)
			sort.Strings(out[i].Sources)
			return out
		}
	}
	out = append(out, Image{Ref: ref, Sources: []string{src}})
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

func without(imgs []Image, ref string) []Image {
	var out []Image
	for _, i := range cloneImages(imgs) {
		if i.Ref != ref {
			out = append(out, i)
		}
	}
	return out
}

func cloneImages(imgs []Image) []Image {
	out := make([]Image, len(imgs))
	for i, img := range imgs {
		out[i] = Image{Ref: img.Ref, Sources: append([]string(nil), img.Sources...)}
	}
	return out
}

func TestDiscoverImagesOptions(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		opts    DiscoverOptions
		want    []Image
		wantErr error
		errHas  string
	}{
		{
			name: "extra image from Docker Hub is normalised",
			opts: DiscoverOptions{Extra: []string{"busybox:1.36"}},
			want: withSource(fixtureImages, "docker.io/library/busybox:1.36", "--image"),
		},
		{
			name: "extra untagged source image gets appVersion and merges",
			opts: DiscoverOptions{Extra: []string{"registry.pseven.io/pseven-app"}},
			want: withSource(fixtureImages, "registry.pseven.io/pseven-app:6.47.4712", "--image"),
		},
		{
			name: "extra untagged foreign image gets latest",
			opts: DiscoverOptions{Extra: []string{"quay.io/prometheus/busybox"}},
			want: withSource(fixtureImages, "quay.io/prometheus/busybox:latest", "--image"),
		},
		{
			name: "extra tag and digest kept",
			opts: DiscoverOptions{Extra: []string{"registry.pseven.io/pseven-tools:1@" + digest}},
			want: withSource(fixtureImages, "registry.pseven.io/pseven-tools:1@"+digest, "--image"),
		},
		{
			name: "exclude untagged source image and secretgen",
			opts: DiscoverOptions{Exclude: []string{"registry.pseven.io/pseven-blocknetworkgate", "registry.pseven.io/pseven-secretgen:6.47.4712"}},
			want: without(without(fixtureImages, "registry.pseven.io/pseven-blocknetworkgate:6.47.4712"), "registry.pseven.io/pseven-secretgen:6.47.4712"),
		},
		{
			name: "exclude wins over extra",
			opts: DiscoverOptions{Extra: []string{"busybox"}, Exclude: []string{"docker.io/library/busybox:latest"}},
			want: fixtureImages,
		},
		{
			name:    "exclude matching nothing",
			opts:    DiscoverOptions{Exclude: []string{"registry.pseven.io/pseven-nope:1"}},
			wantErr: ErrUnmatchedExclude,
			errHas:  `--exclude "registry.pseven.io/pseven-nope:1"`,
		},
		{
			name:    "exclude with another tag matches nothing",
			opts:    DiscoverOptions{Exclude: []string{"registry.pseven.io/pseven-redis:7"}},
			wantErr: ErrUnmatchedExclude,
			errHas:  "pseven-redis:7",
		},
		{
			name:    "invalid extra",
			opts:    DiscoverOptions{Extra: []string{"registry.pseven.io/Pseven-App"}},
			wantErr: ErrInvalidReference,
			errHas:  `--image "registry.pseven.io/Pseven-App"`,
		},
		{
			name:    "invalid exclude",
			opts:    DiscoverOptions{Exclude: []string{"a:b:c"}},
			wantErr: ErrInvalidReference,
			errHas:  `--exclude "a:b:c"`,
		},
		{
			name: "release name shows in template sources",
			opts: DiscoverOptions{ReleaseName: "other", Namespace: "ns"},
			want: renameRelease(fixtureImages, "pseven-rl", "other"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DiscoverImages(c, tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("error %q lacks %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			diffImages(t, got, tt.want)
		})
	}
}

func renameRelease(imgs []Image, from, to string) []Image {
	out := cloneImages(imgs)
	for i := range out {
		for j, s := range out[i].Sources {
			out[i].Sources[j] = strings.ReplaceAll(s, "/"+from+"-", "/"+to+"-")
		}
		sort.Strings(out[i].Sources)
	}
	return out
}

func TestDiscoverImagesOtherSourceRegistry(t *testing.T) {
	// Values point at registry.pseven.io, so with another source registry
	// only rendered images remain: the disabled component is not found, and
	// secretgen comes from the other registry.
	c := mustLoad(t, fixtureDir)
	got, err := DiscoverImages(c, DiscoverOptions{SourceRegistry: "registry.example.com:5000/pseven/"})
	if err != nil {
		t.Fatal(err)
	}
	var want []Image
	for _, img := range cloneImages(fixtureImages) {
		var srcs []string
		for _, s := range img.Sources {
			if strings.HasPrefix(s, "template:") {
				srcs = append(srcs, s)
			}
		}
		if len(srcs) > 0 {
			want = append(want, Image{Ref: img.Ref, Sources: srcs})
		}
	}
	want = withSource(want, "registry.example.com:5000/pseven/pseven-secretgen:6.47.4712", "secretgen")
	diffImages(t, got, want)
}

func TestDiscoverImagesDisabledSubchart(t *testing.T) {
	// With the subchart disabled its templates are not rendered; its image
	// is still found in its own values.
	cp := copyFixture(t)
	vals := filepath.Join(cp, "values.yaml")
	b, err := os.ReadFile(vals)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), "pseven-cache:\n  enabled: true", "pseven-cache:\n  enabled: false", 1)
	if edited == string(b) {
		t.Fatal("fixture values.yaml has no pseven-cache.enabled: true")
	}
	if err := os.WriteFile(vals, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	c := mustLoad(t, cp)
	got, err := DiscoverImages(c, DiscoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := cloneImages(fixtureImages)
	for i := range want {
		if want[i].Ref == "registry.pseven.io/pseven-memcached:1.6.21" {
			want[i].Sources = []string{"values:pseven-cache.image (subchart pseven-cache)"}
		}
	}
	diffImages(t, got, want)
}

func TestDiscoverImagesErrors(t *testing.T) {
	c := mustLoad(t, noImages)
	_, err := DiscoverImages(c, DiscoverOptions{})
	if !errors.Is(err, ErrNoImages) {
		t.Fatalf("err = %v, want ErrNoImages", err)
	}
	if !strings.Contains(err.Error(), `chart "`+noImages+`"`) {
		t.Errorf("error %q does not name the chart", err)
	}

	// Extra alone is enough.
	got, err := DiscoverImages(c, DiscoverOptions{Extra: []string{"registry.pseven.io/pseven-app"}})
	if err != nil {
		t.Fatal(err)
	}
	diffImages(t, got, []Image{
		{Ref: "registry.pseven.io/pseven-app:6.47.4712", Sources: []string{"--image"}},
		{Ref: "registry.pseven.io/pseven-secretgen:6.47.4712", Sources: []string{"secretgen"}},
	})

	// Excluding everything is no better than finding nothing.
	_, err = DiscoverImages(c, DiscoverOptions{
		Extra:   []string{"registry.pseven.io/pseven-app"},
		Exclude: []string{"registry.pseven.io/pseven-app", "registry.pseven.io/pseven-secretgen"},
	})
	if !errors.Is(err, ErrNoImages) {
		t.Errorf("excluding everything: err = %v, want ErrNoImages", err)
	}

	if _, err := DiscoverImages(nil, DiscoverOptions{}); !errors.Is(err, ErrInvalidChart) {
		t.Errorf("nil chart: err = %v, want ErrInvalidChart", err)
	}
}

func TestDiscoverImagesBadTemplates(t *testing.T) {
	tests := []struct {
		name     string
		template string
		wantErr  error
		errHas   string
	}{
		{"template does not render", "{{ fail \"boom\" }}", ErrInvalidChart, "boom"},
		{"rendered YAML is broken", "kind: Pod\nspec: [unclosed\n", ErrInvalidChart, "pseven/templates/broken.yaml"},
		{"invalid rendered image", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n    - name: c\n      image: Registry.pseven.io/X\n", ErrInvalidReference, "template:pseven/templates/broken.yaml Pod/x container c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := copyFixture(t)
			if err := os.WriteFile(filepath.Join(cp, "templates", "broken.yaml"), []byte(tt.template), 0o644); err != nil {
				t.Fatal(err)
			}
			c := mustLoad(t, cp)
			_, err := DiscoverImages(c, DiscoverOptions{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			for _, s := range []string{`chart "` + cp + `"`, tt.errHas} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestValueImages(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sub := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "sub", Version: "1.0.0"},
		Values: map[string]interface{}{
			"image": map[string]interface{}{"repository": "registry.pseven.io/sub", "tag": 7.0},
		},
	}
	subsub := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "deep", Version: "1.0.0"},
		Values:   map[string]interface{}{"img": "registry.pseven.io/deep"},
	}
	sub.AddDependency(subsub)
	top := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "top", Version: "1.0.0",
			Dependencies: []*chart.Dependency{{Name: "sub", Alias: "cache"}}},
		Values: map[string]interface{}{
			"registry": map[string]interface{}{"url": "registry.pseven.io"},
			"docs":     "see https://registry.pseven.io/docs/x and myregistry.pseven.io/nope",
			"args":     []interface{}{"--image=registry.pseven.io/a:1,registry.pseven.io/b@" + digest, 3, nil},
			"digested": map[string]interface{}{"registry": "registry.pseven.io/", "repository": "/c", "tag": "", "digest": digest, "pullPolicy": "registry.pseven.io/d:2"},
			"foreign":  map[string]interface{}{"repository": "docker.io/library/redis", "tag": "7"},
			"list":     []interface{}{map[string]interface{}{"repository": "registry.pseven.io/e"}},
			"sentence": "Pull registry.pseven.io/f:1.0.",
		},
	}
	top.AddDependency(sub)

	got, err := valueImages(top, "registry.pseven.io")
	if err != nil {
		t.Fatal(err)
	}
	want := []foundRef{
		{"registry.pseven.io/a:1", "values:args[0]"},
		{"registry.pseven.io/b@" + digest, "values:args[0]"},
		{"registry.pseven.io/c@" + digest, "values:digested"},
		{"registry.pseven.io/d:2", "values:digested.pullPolicy"},
		{"registry.pseven.io/e", "values:list[0]"},
		{"registry.pseven.io/f:1.0", "values:sentence"},
		{"registry.pseven.io/sub:7", "values:cache.image (subchart cache)"},
		{"registry.pseven.io/deep", "values:cache.deep.img (subchart cache/deep)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("valueImages:\n got %q\nwant %q", got, want)
	}

	// A map tag that is not a scalar is reported with its path.
	bad := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "bad", Version: "1.0.0"},
		Values: map[string]interface{}{"x": map[string]interface{}{
			"image": map[string]interface{}{"repository": "registry.pseven.io/x", "tag": []interface{}{"1"}},
		}},
	}
	if _, err := valueImages(bad, "registry.pseven.io"); err == nil || !strings.Contains(err.Error(), "values:x.image") {
		t.Errorf("bad tag: err = %v, want one naming values:x.image", err)
	}
}

func TestFindRegistryRefs(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in   string
		host string
		want []string
	}{
		{"registry.pseven.io/pseven-app", "registry.pseven.io", []string{"registry.pseven.io/pseven-app"}},
		{"registry.pseven.io/pseven-app:6.47.4712", "registry.pseven.io", []string{"registry.pseven.io/pseven-app:6.47.4712"}},
		{"registry.pseven.io/a/b@" + digest, "registry.pseven.io", []string{"registry.pseven.io/a/b@" + digest}},
		{"registry.pseven.io/a:t@" + digest, "registry.pseven.io", []string{"registry.pseven.io/a:t@" + digest}},
		{`img="registry.pseven.io/x:1" other='registry.pseven.io/y'`, "registry.pseven.io", []string{"registry.pseven.io/x:1", "registry.pseven.io/y"}},
		{"registry.pseven.io/x:{{ .Chart.AppVersion }}", "registry.pseven.io", []string{"registry.pseven.io/x"}},
		{"registry.pseven.io/dir/", "registry.pseven.io", []string{"registry.pseven.io/dir"}},
		{"registry.pseven.io", "registry.pseven.io", nil},
		{"registry.pseven.io/", "registry.pseven.io", nil},
		{"https://registry.pseven.io/v2/", "registry.pseven.io", nil},
		{"myregistry.pseven.io/x", "registry.pseven.io", nil},
		{"registry.pseven.io.example.com/x", "registry.pseven.io", nil},
		{"localhost:5000/p/x:1 localhost:5000/q", "localhost:5000/p", []string{"localhost:5000/p/x:1"}},
	}
	for _, tt := range tests {
		if got := FindRegistryRefs(tt.in, tt.host); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("FindRegistryRefs(%q, %q) = %q, want %q", tt.in, tt.host, got, tt.want)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in, defaultTag, want string
	}{
		{"registry.pseven.io/pseven-app", "6.47.4712", "registry.pseven.io/pseven-app:6.47.4712"},
		{"registry.pseven.io/pseven-app:1", "6.47.4712", "registry.pseven.io/pseven-app:1"},
		{" registry.pseven.io/pseven-app ", "", "registry.pseven.io/pseven-app:latest"},
		{"busybox", "", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "", "docker.io/library/busybox:1.36"},
		{"index.docker.io/library/busybox:1.36", "", "docker.io/library/busybox:1.36"},
		{"docker.io/bitnami/redis:7", "", "docker.io/bitnami/redis:7"},
		{"localhost:5000/x", "v1", "localhost:5000/x:v1"},
		{"localhost:5000/x:2", "v1", "localhost:5000/x:2"},
		{"registry.pseven.io/x@" + digest, "v1", "registry.pseven.io/x@" + digest},
		{"registry.pseven.io/x:t@" + digest, "v1", "registry.pseven.io/x:t@" + digest},
		{"REGISTRY.pseven.io/x", "v1", "REGISTRY.pseven.io/x:v1"}, // host kept as written
	}
	for _, tt := range tests {
		got, err := NormalizeRef(tt.in, tt.defaultTag)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeRef(%q, %q) = %q, %v; want %q", tt.in, tt.defaultTag, got, err, tt.want)
		}
	}
	for _, in := range []string{
		"",
		"registry.pseven.io/Pseven-App",
		"registry.pseven.io/x:",
		"registry.pseven.io/x:a:b",
		"registry.pseven.io/x:bad+tag",
		"registry.pseven.io/x@sha256:short",
		"https://registry.pseven.io/x",
		"registry.pseven.io/x@" + digest + "@" + digest,
	} {
		if got, err := NormalizeRef(in, "v1"); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("NormalizeRef(%q) = %q, %v; want ErrInvalidReference", in, got, err)
		}
	}
}

func TestSecretgenRef(t *testing.T) {
	for _, tt := range []struct{ reg, ver, want string }{
		{"registry.pseven.io", "6.47.4712", "registry.pseven.io/pseven-secretgen:6.47.4712"},
		{"registry.example.com:5000/pseven/", "1", "registry.example.com:5000/pseven/pseven-secretgen:1"},
	} {
		if got := SecretgenRef(tt.reg, tt.ver); got != tt.want {
			t.Errorf("SecretgenRef(%q, %q) = %q, want %q", tt.reg, tt.ver, got, tt.want)
		}
	}
}
