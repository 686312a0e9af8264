package installer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/egress"
	"github.com/p7bundle/p7bundle/internal/version"
	"github.com/p7bundle/p7bundle/manifests"
)

// DefaultSupportTail is how many lines of each container log support takes.
const DefaultSupportTail = 500

const (
	supportDir = "support/"
	// Shorter known secrets are not scrubbed from free text: they would
	// match ordinary words and names.
	minSecretLen = 6
	// Bounds on what one log may add to an archive held in memory.
	maxContainerLog = 8 << 20
	maxInstallLog   = 32 << 20
	logJobs         = 4
)

// Support is `p7bundle support`: it collects what vendor support needs
// into one archive, talking only to the API server: the release's Helm
// history, manifest and values, the namespace's pods, events and container
// logs, the nodes, p7bundle's install logs and the bundle manifest. No
// Secret object is ever read into it; secret values are redacted (see
// Run). Zero fields mean the defaults.
type Support struct {
	Namespace, Release string // default manifests.DefaultNamespace, DefaultReleaseName
	// Bundle, when given, adds the bundle's manifest (signature not checked).
	Bundle string
	Tail   int // lines of each container log; default DefaultSupportTail
	// Output is the archive to write (0600, never over an existing file);
	// default SupportName in the working directory.
	Output                  string
	Kubeconfig, KubeContext string
	// WorkDir is where install logs (pseven-*.log) are looked for; default ".".
	WorkDir string
	Log     io.Writer

	// Cluster and Helm replace the clients Run builds from Kubeconfig
	// (tests: fake clientset, in-memory Helm storage).
	Cluster *Cluster
	Helm    *action.Configuration
}

// SupportReport says what went into a support archive.
type SupportReport struct {
	Output    string   `json:"output"`
	Namespace string   `json:"namespace"`
	Release   string   `json:"release"`
	Revision  int      `json:"revision,omitempty"`
	Entries   []string `json:"entries"`
	// Notes are what could not be collected; also in the archive's README.
	Notes []string `json:"notes,omitempty"`
	// Scrubbed counts known secret values found and replaced in the
	// entries' text after the structured redaction.
	Scrubbed int `json:"scrubbed"`
}

// SupportName is the default output name for a namespace at now.
func SupportName(namespace string, now time.Time) string {
	return fmt.Sprintf("pseven-support-%s-%s.tar.zst", namespace, now.UTC().Format("20060102T150405Z"))
}

type supportEntry struct {
	name, about string
	data        []byte
	// lines: redact every line holding a known secret, not just the value.
	lines bool
}

// supportArchive gathers entries, notes and the secret values to scrub.
type supportArchive struct {
	entries []supportEntry
	notes   []string
	secrets map[string]bool
}

func (a *supportArchive) add(name, about string, data []byte) {
	a.entries = append(a.entries, supportEntry{name: name, about: about, data: data})
}

func (a *supportArchive) note(format string, args ...any) {
	a.notes = append(a.notes, fmt.Sprintf(format, args...))
}

func (a *supportArchive) secret(values ...string) {
	for _, v := range values {
		if len(v) >= minSecretLen {
			a.secrets[v] = true
		}
	}
}

// Run writes the archive. Secrets are kept out in layers: no Secret
// object goes in (the kept secrets Secret is read only to learn what to
// redact) and Secrets are cut from the Helm manifest; values under
// secret-bearing keys and the deployment secrets are redacted
// (manifests.RedactValues), as are pod env values whose name looks
// secret; last, every known secret value (and its base64) left anywhere,
// logs and notes included, is replaced by manifests.Redacted.
func (s *Support) Run(ctx context.Context) (*SupportReport, error) {
	o := *s
	if err := o.defaults(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, format+"\n", args...) }
	// Checked first so minutes of collection are not lost; the final
	// link still never replaces a file created meanwhile.
	if err := checkOutputFile(o.Output, false); err != nil {
		return nil, err
	}
	if o.Bundle != "" {
		if err := readable(o.Bundle); err != nil {
			return nil, fmt.Errorf("--bundle: %w", err)
		}
	}
	cluster, err := o.connect()
	if err != nil {
		return nil, err
	}
	api := cluster.APIHost
	if cluster.Config != nil {
		api = cluster.Config.Host
	}
	v, err := cluster.Clientset.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("%w: Kubernetes API %s: %v", ErrPreflight, api, err)
	}
	logf("support: Kubernetes API %s (%s), namespace %s, release %s", api, v.GitVersion, o.Namespace, o.Release)

	a := &supportArchive{secrets: map[string]bool{}}
	rep := &SupportReport{Output: o.Output, Namespace: o.Namespace, Release: o.Release}
	core := cluster.Clientset.CoreV1()
	if _, err := core.Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		a.note("namespace %s does not exist", o.Namespace)
	} else if err != nil {
		a.note("namespace %s: %v", o.Namespace, err)
	}

	if err := o.release(ctx, cluster, a, rep); err != nil {
		return nil, err
	}
	pods := o.pods(ctx, cluster, a)
	o.events(ctx, cluster, a)
	o.nodes(ctx, cluster, a)
	logf("support: reading the logs of %d pods", len(pods))
	o.logs(ctx, cluster, pods, a)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.installLogs(a)
	o.bundleManifest(a)
	a.entries = append([]supportEntry{{name: "README.txt", data: o.readme(a, api, v.GitVersion, rep)}}, a.entries...)

	rep.Scrubbed = a.scrub()
	data, err := a.archive()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrOutput, o.Output, err)
	}
	if err := createPrivate(o.Output, data); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s already exists and is never overwritten: pass another -o", ErrOutput, o.Output)
		}
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	for _, e := range a.entries {
		rep.Entries = append(rep.Entries, supportDir+e.name)
	}
	rep.Notes = a.notes
	for _, n := range a.notes {
		logf("support: not collected: %s", n)
	}
	logf("support: wrote %s (mode 0600): %d entries, %d known secret values scrubbed", o.Output, len(rep.Entries), rep.Scrubbed)
	return rep, nil
}

func (o *Support) defaults() error {
	if o.Namespace == "" {
		o.Namespace = manifests.DefaultNamespace
	}
	if o.Release == "" {
		o.Release = manifests.DefaultReleaseName
	}
	switch {
	case o.Tail == 0:
		o.Tail = DefaultSupportTail
	case o.Tail < 0:
		return fmt.Errorf("%w: --tail %d: want a positive number of lines", ErrOptions, o.Tail)
	}
	if o.Output == "" {
		o.Output = SupportName(o.Namespace, time.Now())
	}
	if o.WorkDir == "" {
		o.WorkDir = "."
	}
	o.Log = orDiscard(o.Log)
	return nil
}

// connect builds the cluster client (unless given) behind an egress guard
// that allows the API server alone: support needs no registry.
func (o *Support) connect() (*Cluster, error) {
	if o.Cluster != nil {
		return o.Cluster, nil
	}
	apiHost, err := apiEndpoint(o.Kubeconfig, o.KubeContext)
	if err != nil {
		return nil, err
	}
	return connectCluster(o.Kubeconfig, o.KubeContext, o.Namespace, apiHost, egress.New(egress.Options{Allow: []string{apiHost}}).DialContext)
}

// release adds the Helm history, the current revision's manifest (no
// Secrets) and redacted values, and learns the secret values to scrub.
func (o *Support) release(ctx context.Context, c *Cluster, a *supportArchive, rep *SupportReport) error {
	kept, err := c.keptSecrets(ctx, o.Namespace, o.Release)
	if err != nil {
		a.note("%v (only secret-looking value keys are redacted)", err)
	}
	var keptKeys []string
	if kept != nil {
		var m map[string]interface{}
		if yaml.Unmarshal(kept, &m) == nil {
			for k := range m {
				keptKeys = append(keptKeys, k)
			}
			a.secret(manifests.SecretValues(m, keptKeys...)...)
		} else {
			a.note("Secret %s is not a YAML map: its values could not be learnt for scrubbing", keptSecretName(o.Release))
		}
	}

	cfg := o.Helm
	if cfg == nil {
		if c.Flags == nil {
			return fmt.Errorf("%w: support needs Helm or a Cluster built from a kubeconfig", ErrOptions)
		}
		cfg = new(action.Configuration)
		if err := cfg.Init(c.Flags, o.Namespace, "secret", func(string, ...interface{}) {}); err != nil {
			a.note("Helm: %v", err)
			return nil
		}
	}
	state, err := ReadRelease(cfg, o.Release)
	if err != nil {
		a.note("%v", err)
		return nil
	}
	if len(state.History) == 0 {
		a.note("release %s: not found in namespace %s (no Helm history)", o.Release, o.Namespace)
		return nil
	}
	// Every revision's secrets, not only the current one's: an old
	// password may still be in a log.
	secretKeys := func(r *release.Release) []string {
		keys := append([]string{}, keptKeys...)
		if r.Chart != nil {
			keys = append(keys, (&ReleaseState{Current: r}).secretKeys(nil, nil)...)
		}
		return keys
	}
	for _, r := range state.History {
		a.secret(manifests.SecretValues(r.Config, secretKeys(r)...)...)
	}
	hist, err := json.MarshalIndent(state.historyEntries(), "", "  ")
	if err != nil {
		return err
	}
	a.add(backupHistory, "the release's Helm history (helm history "+o.Release+" -n "+o.Namespace+")", hist)

	cur, which := state.Current, "current"
	if cur == nil {
		cur, which = state.Last(), "last (none ever deployed)"
	}
	rep.Revision = cur.Version
	info := map[string]interface{}{"name": cur.Name, "namespace": cur.Namespace, "revision": cur.Version, "status": cur.Info.Status.String()}
	if cur.Chart != nil && cur.Chart.Metadata != nil {
		info["chart"], info["chartVersion"], info["appVersion"] = cur.Chart.Metadata.Name, cur.Chart.Metadata.Version, cur.Chart.Metadata.AppVersion
	}
	if !cur.Info.LastDeployed.IsZero() {
		info["lastDeployed"] = cur.Info.LastDeployed.UTC().Format(time.RFC3339)
	}
	relJSON, _ := json.MarshalIndent(info, "", "  ")
	a.add("release.json", fmt.Sprintf("revision %d, the %s one: chart name and version, status", cur.Version, which), relJSON)
	a.add(backupManifest, fmt.Sprintf("the Kubernetes manifest of revision %d, Secret objects left out", cur.Version), []byte(withoutSecrets(cur.Manifest)))
	vals, err := yaml.Marshal(manifests.RedactValues(cur.Config, secretKeys(cur)...))
	if err != nil {
		return err
	}
	a.add(backupValues, fmt.Sprintf("the values of revision %d (helm get values), secrets shown as %s", cur.Version, manifests.Redacted), vals)
	return nil
}

// withoutSecrets replaces each Secret (or List holding one) in a rendered
// manifest by a comment naming it; what does not parse is kept, for the
// scrub to go over.
func withoutSecrets(manifest string) string {
	var b strings.Builder
	for _, doc := range manifestDocs(manifest) {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Items []struct {
				Kind string `json:"kind"`
			} `json:"items"`
		}
		if yaml.Unmarshal([]byte(doc), &obj) == nil {
			secret := obj.Kind == "Secret"
			for _, it := range obj.Items {
				secret = secret || it.Kind == "Secret"
			}
			if secret {
				doc = fmt.Sprintf("# %s %s: left out (Secrets never go into a support archive)", obj.Kind, obj.Metadata.Name)
			}
		}
		b.WriteString("---\n" + strings.TrimRight(doc, "\n") + "\n")
	}
	return b.String()
}

// pods adds the namespace's pods, env values of secret-looking names
// redacted, and returns them for their logs.
func (o *Support) pods(ctx context.Context, c *Cluster, a *supportArchive) []corev1.Pod {
	list, err := c.Clientset.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		a.note("pods of %s: %v", o.Namespace, err)
		return nil
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		p := &list.Items[i]
		p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		p.ManagedFields = nil
		redactEnv(p, a)
	}
	out := list.Items
	list.TypeMeta, list.ListMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, metav1.ListMeta{}
	a.addYAML("pods.yaml", fmt.Sprintf("the pods of %s (%d), as kubectl get pods -o yaml; secret-looking env values redacted", o.Namespace, len(out)), list)
	return out
}

func redactEnv(p *corev1.Pod, a *supportArchive) {
	envs := []*[]corev1.EnvVar{}
	for i := range p.Spec.InitContainers {
		envs = append(envs, &p.Spec.InitContainers[i].Env)
	}
	for i := range p.Spec.Containers {
		envs = append(envs, &p.Spec.Containers[i].Env)
	}
	for i := range p.Spec.EphemeralContainers {
		envs = append(envs, &p.Spec.EphemeralContainers[i].Env)
	}
	for _, env := range envs {
		for j := range *env {
			e := &(*env)[j]
			if e.Value != "" && manifests.LooksSecret(e.Name) {
				a.secret(e.Value)
				e.Value = manifests.Redacted
			}
		}
	}
}

func (a *supportArchive) addYAML(name, about string, v interface{}) {
	data, err := yaml.Marshal(v)
	if err != nil {
		a.note("%s: %v", name, err)
		return
	}
	a.add(name, about, data)
}

// events adds the namespace's events, oldest first.
func (o *Support) events(ctx context.Context, c *Cluster, a *supportArchive) {
	list, err := c.Clientset.CoreV1().Events(o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		a.note("events of %s: %v", o.Namespace, err)
		return
	}
	sortEvents(list.Items)
	for i := range list.Items {
		list.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Event"}
		list.Items[i].ManagedFields = nil
	}
	list.TypeMeta, list.ListMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, metav1.ListMeta{}
	a.addYAML("events.yaml", fmt.Sprintf("the events of %s (%d), oldest first", o.Namespace, len(list.Items)), list)
}

// nodes adds every node with its status, capacity and conditions.
func (o *Support) nodes(ctx context.Context, c *Cluster, a *supportArchive) {
	list, err := c.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		a.note("nodes: %v", err)
		return
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		list.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}
		list.Items[i].ManagedFields = nil
	}
	list.TypeMeta, list.ListMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, metav1.ListMeta{}
	a.addYAML("nodes.yaml", fmt.Sprintf("the nodes (%d): status, capacity, conditions", len(list.Items)), list)
}

// logs adds the last Tail lines of every container of every pod, and of
// its previous run when it restarted; a log that cannot be read is noted.
func (o *Support) logs(ctx context.Context, c *Cluster, pods []corev1.Pod, a *supportArchive) {
	type job struct {
		pod, container string
		previous       bool
		data           []byte
		err            error
	}
	var jobs []*job
	for _, p := range pods {
		restarts := map[string]int32{}
		for _, st := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			restarts[st.Name] = st.RestartCount
		}
		for _, ct := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			jobs = append(jobs, &job{pod: p.Name, container: ct.Name})
			if restarts[ct.Name] > 0 {
				jobs = append(jobs, &job{pod: p.Name, container: ct.Name, previous: true})
			}
		}
	}
	tail, limit := int64(o.Tail), int64(maxContainerLog)
	sem := make(chan struct{}, logJobs)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			opts := &corev1.PodLogOptions{Container: j.container, Previous: j.previous, TailLines: &tail, LimitBytes: &limit}
			r, err := c.Clientset.CoreV1().Pods(o.Namespace).GetLogs(j.pod, opts).Stream(ctx)
			if err != nil {
				j.err = err
				return
			}
			defer r.Close()
			j.data, j.err = io.ReadAll(io.LimitReader(r, maxContainerLog))
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		name, what := fmt.Sprintf("logs/%s/%s.log", j.pod, j.container), "current"
		if j.previous {
			name, what = fmt.Sprintf("logs/%s/%s.previous.log", j.pod, j.container), "previous (terminated)"
		}
		if j.err != nil {
			a.note("log of %s container %s (%s): %v", j.pod, j.container, what, j.err)
			continue
		}
		a.add(name, fmt.Sprintf("the last %d lines of the %s run", o.Tail, what), j.data)
	}
}

// installLogs adds p7bundle's install logs (pseven-*.log) from WorkDir,
// each line holding a known secret redacted whole.
func (o *Support) installLogs(a *supportArchive) {
	paths, _ := filepath.Glob(filepath.Join(o.WorkDir, "pseven-*.log"))
	sort.Strings(paths)
	if len(paths) == 0 {
		a.note("no install log (pseven-*.log) in %s", o.WorkDir)
	}
	for _, p := range paths {
		data, err := readTail(p, maxInstallLog)
		if err != nil {
			a.note("install log %s: %v", p, err)
			continue
		}
		a.entries = append(a.entries, supportEntry{name: "install-logs/" + filepath.Base(p), data: data, lines: true,
			about: "p7bundle's install log " + p + ", lines holding a known secret redacted"})
	}
}

// readTail reads a regular file, only its last max bytes if longer.
func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// bundleManifest adds the bundle's manifest (its table of contents); the
// signature is not checked: support only reads what it claims to be.
func (o *Support) bundleManifest(a *supportArchive) {
	if o.Bundle == "" {
		return
	}
	m, err := bundle.ReadManifest(o.Bundle)
	if err != nil {
		a.note("%v", err)
		return
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		a.note("bundle %s: %v", o.Bundle, err)
		return
	}
	a.add("bundle-manifest.json", "the manifest of "+o.Bundle+" (signature NOT checked: run p7bundle verify for that)", data)
}

func (o *Support) readme(a *supportArchive, api, server string, rep *SupportReport) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "p7bundle %s support archive, %s\n\n", version.Version, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Kubernetes API %s (%s), namespace %s, Helm release %s", api, server, o.Namespace, o.Release)
	if rep.Revision > 0 {
		fmt.Fprintf(&b, " (revision %d)", rep.Revision)
	}
	b.WriteString("\n\nEntries:\n")
	for _, e := range a.entries {
		fmt.Fprintf(&b, "  %s\n      %s\n", supportDir+e.name, e.about)
	}
	if len(a.notes) > 0 {
		b.WriteString("\nNot collected:\n")
		for _, n := range a.notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	fmt.Fprintf(&b, `
Secrets: no Secret object was read into this archive; Secrets are left out
of manifest.yaml. Values under secret-looking keys, the deployment secrets
(kept in Secret %s) and pod env values with secret-looking names
read %s. Every known secret value (of at least %d characters, and its
base64) found anywhere else, logs included, was replaced by %s too;
in install logs, the whole line.
`, keptSecretName(o.Release), manifests.Redacted, minSecretLen, manifests.Redacted)
	return []byte(b.String())
}

// scrub replaces every known secret value, and its base64, in every entry
// (whole lines in install logs) and note, and returns how many entries'
// occurrences it replaced.
func (a *supportArchive) scrub() int {
	var secrets [][]byte
	for s := range a.secrets {
		secrets = append(secrets, []byte(s), []byte(base64.StdEncoding.EncodeToString([]byte(s))))
	}
	// Longest first, so a secret inside a longer one does not leave the rest.
	sort.Slice(secrets, func(i, j int) bool {
		if len(secrets[i]) != len(secrets[j]) {
			return len(secrets[i]) > len(secrets[j])
		}
		return bytes.Compare(secrets[i], secrets[j]) < 0
	})
	red := []byte(manifests.Redacted)
	n := 0
	for i := range a.notes {
		for _, s := range secrets {
			a.notes[i] = strings.ReplaceAll(a.notes[i], string(s), manifests.Redacted)
		}
	}
	for i := range a.entries {
		e := &a.entries[i]
		if e.lines {
			lines := bytes.SplitAfter(e.data, []byte("\n"))
			for k, l := range lines {
				for _, s := range secrets {
					if bytes.Contains(l, s) {
						n++
						lines[k] = []byte(manifests.Redacted + ": this line held a secret\n")
						break
					}
				}
			}
			e.data = bytes.Join(lines, nil)
		}
		for _, s := range secrets {
			if c := bytes.Count(e.data, s); c > 0 {
				n += c
				e.data = bytes.ReplaceAll(e.data, s, red)
			}
		}
	}
	return n
}

// archive is the entries as a tar.zst under supportDir.
func (a *supportArchive) archive() ([]byte, error) {
	entries := make([]tarEntry, len(a.entries))
	for i, e := range a.entries {
		entries[i] = tarEntry{supportDir + e.name, e.data}
	}
	return tarZst(entries, time.Now().UTC().Truncate(time.Second))
}
