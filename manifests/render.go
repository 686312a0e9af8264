package manifests

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"
)

// containerFields are the pod-spec lists whose items carry an image, with
// the label used in Sources.
var containerFields = []struct{ key, label string }{
	{"containers", "container"},
	{"initContainers", "initContainer"},
	{"ephemeralContainers", "ephemeralContainer"},
}

// renderedImages renders the chart's templates with its default values, the
// way `helm install` would before talking to the cluster, and returns the
// image of every container of every rendered object, hooks included.
func renderedImages(c *Chart, opts DiscoverOptions, vals map[string]interface{}) ([]foundRef, error) {
	files, err := renderChart(c, opts, vals)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: rendering templates: %w", c.label(), ErrInvalidChart, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)

	var out []foundRef
	for _, file := range names {
		if !isManifestFile(file) {
			continue
		}
		docs := releaseutil.SplitManifests(files[file])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			var doc interface{}
			if err := yaml.Unmarshal([]byte(docs[k]), &doc); err != nil {
				return nil, fmt.Errorf("%s: %w: rendered %s: %w", c.label(), ErrInvalidChart, file, err)
			}
			walkContainers(doc, "", func(object, field, container, image string) {
				src := "template:" + file
				if object != "" {
					src += " " + object
				}
				src += " " + field + " " + container
				out = append(out, foundRef{ref: image, source: src})
			})
		}
	}
	return out, nil
}

// isManifestFile tells rendered manifests from other template output:
// NOTES.txt (and anything else that is not YAML or JSON) is skipped.
func isManifestFile(file string) bool {
	base := path.Base(file)
	if base == "NOTES.txt" || strings.HasPrefix(base, "_") {
		return false
	}
	switch path.Ext(base) {
	case ".yaml", ".yml", ".json", ".tpl":
		return true
	}
	return false
}

// renderChart is the client-side half of `helm install --dry-run`: default
// values, dependency conditions and import-values honoured, default
// capabilities, no cluster lookups.
func renderChart(c *Chart, opts DiscoverOptions, vals map[string]interface{}) (map[string]string, error) {
	// ProcessDependencies prunes disabled subcharts from the chart it is
	// given; work on a private copy so c.Chart stays complete.
	ch, err := reloadChart(c)
	if err != nil {
		return nil, err
	}
	if vals == nil {
		vals = map[string]interface{}{}
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return nil, err
	}
	rel := chartutil.ReleaseOptions{
		Name:      opts.ReleaseName,
		Namespace: opts.Namespace,
		Revision:  1,
		IsInstall: true,
	}
	top, err := chartutil.ToRenderValues(ch, vals, rel, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, top)
}

// reloadChart returns a fresh copy of the chart, loaded again from the files
// Helm read (or from the archive).
func reloadChart(c *Chart) (*chart.Chart, error) {
	if len(c.Chart.Raw) > 0 {
		files := make([]*loader.BufferedFile, 0, len(c.Chart.Raw))
		for _, f := range c.Chart.Raw {
			files = append(files, &loader.BufferedFile{Name: f.Name, Data: f.Data})
		}
		return loader.LoadFiles(files)
	}
	if len(c.Archive) > 0 {
		return loader.LoadArchive(bytes.NewReader(c.Archive))
	}
	return nil, fmt.Errorf("chart has neither files nor an archive")
}

// walkContainers visits every item of every containers / initContainers /
// ephemeralContainers list anywhere in a decoded YAML document, so any kind
// works (Pod, workload controllers, CronJob, List, custom resources).
// object is "<Kind>/<name>" of the innermost enclosing object with a kind.
func walkContainers(node interface{}, object string, visit func(object, field, container, image string)) {
	switch n := node.(type) {
	case map[string]interface{}:
		if kind, ok := n["kind"].(string); ok && kind != "" {
			if md, ok := n["metadata"].(map[string]interface{}); ok {
				name, _ := md["name"].(string)
				if name == "" {
					name, _ = md["generateName"].(string)
				}
				object = kind + "/" + name
			}
		}
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			field := ""
			for _, cf := range containerFields {
				if k == cf.key {
					field = cf.label
				}
			}
			list, isList := n[k].([]interface{})
			if field == "" || !isList {
				walkContainers(n[k], object, visit)
				continue
			}
			for _, item := range list {
				ct, ok := item.(map[string]interface{})
				if !ok {
					continue
				}
				// A list that merely shares the name (some CRDs) has no image.
				image, _ := ct["image"].(string)
				if strings.TrimSpace(image) == "" {
					continue
				}
				name, _ := ct["name"].(string)
				visit(object, field, name, image)
			}
		}
	case []interface{}:
		for _, item := range n {
			walkContainers(item, object, visit)
		}
	}
}
