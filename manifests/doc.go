// Package manifests loads the pSeven Enterprise Helm chart and finds the
// container images it needs, without any registry or cluster I/O.
//
// Image discovery is the union of two independent views of the chart:
//
//   - the templates, rendered client-side with the chart's default values
//     (like `helm template`), where every container, init container and
//     ephemeral container image of every rendered object is collected;
//   - the values (the chart's and every subchart's own values.yaml), where
//     every reference to the source registry is collected, as a plain string
//     or in the {repository, tag} / {registry, repository, tag} map forms.
//
// Rendering finds images that values do not list (references built in a
// template); values find images of components that are disabled by default
// and therefore not rendered. The pseven-secretgen image, which the chart
// does not reference but the installation needs (see the vendor guide,
// "Secrets"), is always added.
//
// It also writes the site values (every source-registry reference moved,
// registry.* set) and lints a render of them. Discovery, that rewrite and
// lint share one matcher of the source registry (refPattern, hostPattern).
// Two pieces are hand-written on purpose: the values merge edits the
// admin's YAML node tree (yaml.v3) so the first -f file keeps its comments
// and key order, which Helm's map-based merge loses; and chart packaging
// writes the .tgz with fixed headers and order, as Helm's packager does
// not, so a bundle built twice from one chart is byte-identical.
package manifests
