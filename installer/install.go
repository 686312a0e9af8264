package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// ErrHelm: Helm could not install or upgrade the release.
var ErrHelm = errors.New("helm")

// secretsKey is the key of the kept secrets file in the release's Secret.
const secretsKey = "pseven-secrets.yaml"

// Install is `p7bundle install`: the whole site-side procedure of the
// vendor guide, in the order that keeps a failure from leaving a
// half-changed site: verify, preflight, push, values, lint, secrets, Helm.
// Zero fields mean the defaults.
type Install struct {
	Bundle string
	Signature
	// Base is the base bundle of a differential Bundle, pushed first when given.
	Base string
	Site SiteRegistry
	Jobs int // concurrent uploads; default DefaultJobs

	Files       []string
	Sets        manifests.Sets
	SecretsFile string // --secrets: used as given
	SecretsOut  string // where generated secrets go; default DefaultSecretsFile
	ValuesOut   string // default DefaultValuesFile
	LogFile     string // default pseven-<chart version>.log

	Namespace, Release      string // default manifests.DefaultNamespace, DefaultReleaseName
	CreateNamespace         bool
	Kubeconfig, KubeContext string
	Timeout                 time.Duration // default DefaultTimeout
	// NoWait skips waiting for resources and Jobs (the guide installs with --wait).
	NoWait bool
	DryRun bool
	// Recover rolls a release stuck in pending-* back to its last
	// deployed revision (or removes a never-deployed one) before going on.
	Recover bool
	// AllowDowngrade installs a chart older than the running one.
	AllowDowngrade bool
	// ResetValues starts an upgrade from the chart's defaults instead of
	// the running release's values.
	ResetValues bool
	// BackupDir is where the pre-upgrade backup goes (default: the working
	// directory); NoBackup skips it.
	BackupDir string
	NoBackup  bool
	// SkipDoctor skips the site checks install runs before pushing;
	// DoctorTimeout bounds each of its in-cluster probes.
	SkipDoctor    bool
	DoctorTimeout time.Duration

	// Out gets the report, Log progress lines (stderr).
	Out, Log io.Writer

	// Cluster, Helm and Client replace the clients Run builds from
	// Kubeconfig and Site (tests: fake clientset, in-memory Helm storage).
	Cluster *Cluster
	Helm    *action.Configuration
	Client  *mirror.Client
}

// Report is the outcome of an install.
type Report struct {
	Release     string             `json:"release"`
	Namespace   string             `json:"namespace"`
	Revision    int                `json:"revision"`
	Status      string             `json:"status"`
	Action      string             `json:"action"`
	Pushed      *mirror.PushResult `json:"pushed,omitempty"`
	Endpoints   *Endpoints         `json:"endpoints,omitempty"`
	Filled      []string           `json:"filled,omitempty"`
	ValuesFile  string             `json:"valuesFile"`
	SecretsFile string             `json:"secretsFile,omitempty"`
	Backup      string             `json:"backup,omitempty"`
	Healthy     bool               `json:"healthy"`
	Notes       string             `json:"-"`
	LogFile     string             `json:"logFile"`
	Lint        *LintResult        `json:"lint,omitempty"`
	// ValuesDiff lists what an upgrade changes in the release's values.
	ValuesDiff []string              `json:"valuesDiff,omitempty"`
	Repointed  []manifests.Repointed `json:"repointed,omitempty"`
	Doctor     *DoctorReport         `json:"doctor,omitempty"`
	// Approvals are those --require-approval was met with.
	Approvals []Approved           `json:"approvals,omitempty"`
	Preflight *Preflight           `json:"-"`
	Images    []mirror.PushedImage `json:"-"`
}

// Run installs or upgrades the release and reports where it answers.
func (i *Install) Run(ctx context.Context) (*Report, error) {
	o := *i
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if err := o.checkLocal(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, format+"\n", args...) }
	// First, before trusting anything in the bundle: its signed table of
	// contents. The chart and every blob are checked against it as read.
	archive, approved, err := o.Signature.openApproved(ctx, o.Bundle, o.Log)
	if err != nil {
		return nil, err
	}
	defer archive.Close()
	chart, err := archive.Chart()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", o.Bundle, err)
	}
	m := archive.Manifest()
	if o.LogFile == "" {
		o.LogFile = "pseven-" + m.Chart.Version + ".log"
	}
	logFile, err := os.OpenFile(o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file %s: %w", o.LogFile, err)
	}
	defer logFile.Close()
	debug := func(format string, args ...any) {
		fmt.Fprintf(logFile, time.Now().UTC().Format(time.RFC3339)+" "+format+"\n", args...)
	}
	step := func(format string, args ...any) {
		logf(format, args...)
		debug(format, args...)
	}
	rep := &Report{Release: o.Release, Namespace: o.Namespace, ValuesFile: o.ValuesOut, LogFile: o.LogFile, Approvals: approved}
	for _, a := range approved {
		debug("approval: %s line %d (%s) by %s (%s), valid until %s, note %q", a.File, a.Line, a.Digest, a.Key, a.Approver, a.NotAfter, a.Note)
	}

	cluster, client, err := o.connect(stepWriter(step))
	if err != nil {
		return nil, err
	}

	step("preflight: Kubernetes API %s, site registry %s", cluster.Config.Host, o.Site.Host)
	pf, err := cluster.Check(ctx, o.Namespace, o.CreateNamespace && !o.DryRun)
	if err != nil {
		return nil, err
	}
	rep.Preflight = pf
	for _, w := range pf.Warnings {
		step("WARNING: %s", w)
	}
	if err := client.Ping(ctx, o.Site.Host); err != nil {
		return nil, fmt.Errorf("%w: site registry %s: %w", ErrPreflight, o.Site.Host, err)
	}
	cfg := o.Helm
	if cfg == nil {
		cfg = new(action.Configuration)
		if err := cfg.Init(cluster.Flags, o.Namespace, "secret", func(format string, v ...interface{}) { debug("helm: "+format, v...) }); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHelm, err)
		}
	}
	state, err := ReadRelease(cfg, o.Release)
	if err != nil {
		return nil, err
	}
	helmStep, err := state.Plan(o.Recover)
	if err != nil {
		return nil, err
	}
	if err := state.CheckDowngrade(m.Chart.Version, o.AllowDowngrade); err != nil {
		return nil, err
	}
	step("preflight passed: Kubernetes %s, %d nodes, namespace %s, release %s: %s", pf.ServerVersion, len(pf.Nodes), o.Namespace, o.Release, state.describe())

	// registry.username/password are what this run pulls with, docker
	// config credentials included: never blanked.
	site := o.Site
	if site.Username == "" {
		if site.Username, site.Password, err = client.Credential(ctx, site.Host); err != nil {
			return nil, err
		}
	}
	kept, err := cluster.keptSecrets(ctx, o.Namespace, o.Release)
	if err != nil {
		return nil, err
	}
	ch, err := manifests.LoadChartArchive(o.Bundle+":"+m.Chart.Path, chart)
	if err != nil {
		return nil, err
	}
	secretKeys := state.secretKeys(kept, ch.Chart.Values)
	var carried map[string]interface{}
	if helmStep == StepUpgrade && !o.ResetValues {
		carried = state.userValues(ch, m.SourceRegistry, o.Site.Path(), secretKeys)
		step("values: starting from the %d top-level keys the admin set in revision %d (--reset-values starts from the chart's defaults)", len(carried), state.Current.Version)
	}
	p, err := prepareFrom(&Prepared{Verified: !o.InsecureSkipVerify}, m, chart, valuesInput{
		Bundle: o.Bundle, Site: site, Files: o.Files, Sets: o.Sets, Sizing: pf.Sizing, Carried: carried,
	})
	if err != nil {
		return nil, err
	}
	if o.SkipDoctor || o.DryRun {
		step("doctor: skipped (%s)", map[bool]string{true: "--skip-doctor", false: "dry run: it would push the probe and run pods"}[o.SkipDoctor])
	} else {
		doc := &Doctor{Bundle: o.Bundle, Site: o.Site, Namespace: o.Namespace, Timeout: o.DoctorTimeout,
			Log: io.MultiWriter(o.Log, logFile), Cluster: cluster, Client: client, archive: archive, values: p.Values.Values}
		rep.Doctor, err = doc.Run(ctx)
		if err != nil {
			return nil, err
		}
		var table strings.Builder
		PrintDoctor(&table, rep.Doctor)
		for _, line := range strings.Split(strings.TrimSpace(table.String()), "\n") {
			step("doctor: %s", line)
		}
		if err := rep.Doctor.Err(); err != nil {
			return rep, fmt.Errorf("%w (fix it, or pass --skip-doctor)", err)
		}
	}
	if !o.DryRun {
		push := &Push{Bundle: o.Bundle, Signature: o.Signature, Base: o.Base, Site: o.Site, Jobs: o.Jobs,
			Client: client, Log: io.MultiWriter(o.Log, logFile), archive: archive}
		rep.Pushed, err = push.Run(ctx)
		if err != nil {
			return nil, err
		}
		step("pushed %d images: %d blobs uploaded, %d already present, %d mounted", len(rep.Pushed.Images), rep.Pushed.BlobsPushed, rep.Pushed.BlobsSkipped, rep.Pushed.BlobsMounted)
	}
	rep.Filled = p.Values.Filled
	for _, f := range p.Values.Filled {
		step("filled from the cluster: %s", f)
	}
	for _, f := range p.Values.TagForms {
		if strings.Contains(f, "left untagged") {
			step("values: %s", f)
		} else {
			debug("values: %s", f)
		}
	}
	rep.Repointed = p.Values.Repointed
	for _, r := range p.Values.Repointed {
		step("values: %s moved to this bundle: %s -> %s", r.Path, r.From, r.To)
	}
	if state.Current != nil && helmStep == StepUpgrade {
		rep.ValuesDiff = manifests.DiffValues(state.Current.Config, p.Values.Values, secretKeys...)
		step("values: %d changes from revision %d%s", len(rep.ValuesDiff), state.Current.Version, map[bool]string{true: ":", false: ""}[len(rep.ValuesDiff) > 0])
		for _, d := range rep.ValuesDiff {
			step("  %s", d)
		}
	}
	if err := writeSecretFile(o.ValuesOut, p.Values.Document); err != nil {
		return nil, err
	}
	step("wrote %s (mode 0600)", o.ValuesOut)

	lint, err := lint(ctx, p, client, o.Site, o.Release, o.Namespace)
	if err != nil {
		return nil, err
	}
	rep.Lint = lint
	if err := lint.Err(); err != nil && !o.DryRun {
		return rep, err
	} else if err != nil {
		step("dry run: %v", err)
	} else {
		step("air-gap lint passed: %d images, all in %s", len(lint.Images), o.Site.Path())
	}

	if o.DryRun {
		rep.Action = string(helmStep) + " (dry run)"
		step("dry run: would %s release %s in %s; nothing was changed", rep.Action, o.Release, o.Namespace)
		return rep, nil
	}

	if helmStep == StepUpgrade && o.NoBackup {
		step("WARNING: --no-backup: release %s revision %d is upgraded WITHOUT a backup of its values, secrets and manifest", o.Release, state.Current.Version)
	} else if helmStep == StepUpgrade {
		if rep.Backup, err = backupRevision(o.BackupDir, o.Release, state, kept, o.Namespace); err != nil {
			return nil, err
		}
		step("backup of revision %d: %s (mode 0600; holds secrets)", state.Current.Version, rep.Backup)
	}

	secrets, secretsFile, err := o.secrets(ctx, cluster, p, state, kept, secretKeys, site, step)
	if err != nil {
		return nil, err
	}
	rep.SecretsFile = secretsFile
	if _, err := os.Stat(o.SecretsOut); secretsFile == "" && err == nil {
		rep.SecretsFile = o.SecretsOut
	}
	vals := p.Values.Values
	for k, v := range secrets {
		vals[k] = v
	}

	rep.Action = string(helmStep)
	h := &helmRun{cfg: cfg, namespace: o.Namespace, release: o.Release, timeout: o.Timeout, wait: !o.NoWait, step: step, approved: approved}
	rel, err := h.apply(ctx, state, helmStep, p.Chart.Chart, vals)
	if err != nil {
		for _, f := range cluster.failingPods(context.WithoutCancel(ctx), o.Namespace) {
			step("  %s", f)
		}
		hint := ""
		if state.EverDeployed() {
			hint = fmt.Sprintf("; revision %d still runs, nothing was uninstalled: fix the cause and rerun to retry the upgrade", state.Current.Version)
		}
		return rep, fmt.Errorf("%w: %s of release %s failed (details in %s)%s: %v", ErrHelm, rep.Action, o.Release, o.LogFile, hint, err)
	}
	rep.Revision, rep.Status, rep.Notes = rel.Version, rel.Info.Status.String(), rel.Info.Notes
	step("release %s revision %d: %s", rel.Name, rel.Version, rel.Info.Status)
	e, err := cluster.endpoints(ctx, rel, pf.Nodes)
	if err != nil {
		step("WARNING: %v", err)
		return rep, nil
	}
	rep.Endpoints = e
	if o.NoWait {
		return rep, nil
	}
	if err := cluster.probeHealth(ctx, o.Namespace, e, 2*time.Minute); err != nil {
		for _, f := range cluster.failingPods(context.WithoutCancel(ctx), o.Namespace) {
			step("  %s", f)
		}
		return rep, fmt.Errorf("%w: release %s revision %d is deployed, but %v", ErrHelm, o.Release, rel.Version, err)
	}
	rep.Healthy = true
	step("health check answered: %s (through the API server's service proxy)", e.HealthCheck)
	return rep, nil
}

func (o *Install) defaults() error {
	site, err := o.Site.resolved()
	if err != nil {
		return err
	}
	o.Site = site
	if o.Namespace == "" {
		o.Namespace = manifests.DefaultNamespace
	}
	if o.Release == "" {
		o.Release = manifests.DefaultReleaseName
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ValuesOut == "" {
		o.ValuesOut = DefaultValuesFile
	}
	if o.BackupDir == "" {
		o.BackupDir = DefaultBackupDir
	}
	if o.SecretsOut == "" {
		o.SecretsOut = DefaultSecretsFile
	}
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobs
	}
	o.Log, o.Out = orDiscard(o.Log), orDiscard(o.Out)
	return nil
}

// checkLocal fails before the first dial on what this machine can tell
// at once: -f, --set-file and --secrets files that cannot be read, sets
// that do not parse, a bad --ca-file or kubeconfig, and directories the
// values, backup, log and secrets files cannot be written to.
func (o *Install) checkLocal() error {
	if err := checkValuesInputs(o.Files, o.Sets); err != nil {
		return err
	}
	if err := o.Site.checkCA(); err != nil {
		return err
	}
	if o.SecretsFile != "" {
		if err := readable(o.SecretsFile); err != nil {
			return fmt.Errorf("%w: --secrets: %v", ErrSecrets, err)
		}
	}
	dirs := []string{filepath.Dir(o.ValuesOut), filepath.Dir(o.SecretsOut), o.BackupDir}
	if o.LogFile != "" {
		dirs = append(dirs, filepath.Dir(o.LogFile))
	}
	for _, d := range dirs {
		if err := atomicfile.CheckDir(d); err != nil {
			return fmt.Errorf("%w: directory %s: %v", ErrOutput, d, err)
		}
	}
	if o.Cluster == nil {
		if _, err := apiEndpoint(o.Kubeconfig, o.KubeContext); err != nil {
			return err
		}
	}
	return nil
}

// checkValuesInputs fails at once on -f files that cannot be read and on
// sets that Helm cannot parse (--set-file files included).
func checkValuesInputs(files []string, sets manifests.Sets) error {
	for _, f := range files {
		if err := readable(f); err != nil {
			return fmt.Errorf("%w: values file: %v", manifests.ErrInvalidValues, err)
		}
	}
	_, err := manifests.HelmValues(nil, sets)
	return err
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// connect builds the cluster and registry clients (unless given), both
// behind one egress guard that allows exactly the site registry and the
// API server.
func (o *Install) connect(log io.Writer) (*Cluster, *mirror.Client, error) {
	return connect(o.Site, o.Kubeconfig, o.KubeContext, o.Namespace, o.Cluster, o.Client, log)
}

// stepWriter writes each line through a step logger (the terminal and the
// install log).
type stepWriter func(format string, args ...any)

func (w stepWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w("%s", line)
	}
	return len(p), nil
}

func connect(site SiteRegistry, kubeconfig, kubeContext, namespace string, cluster *Cluster, client *mirror.Client, log io.Writer) (*Cluster, *mirror.Client, error) {
	if cluster != nil && client != nil {
		return cluster, client, nil
	}
	apiHost := ""
	if cluster != nil {
		apiHost = cluster.APIHost
	} else {
		var err error
		if apiHost, err = apiEndpoint(kubeconfig, kubeContext); err != nil {
			return nil, nil, err
		}
	}
	guard := site.Guard(log, apiHost)
	var err error
	if client == nil {
		if client, err = site.client(guard); err != nil {
			return nil, nil, err
		}
	}
	if cluster == nil {
		if cluster, err = connectCluster(kubeconfig, kubeContext, namespace, apiHost, guard.DialContext); err != nil {
			return nil, nil, err
		}
	}
	return cluster, client, nil
}

// secrets decides where the deployment secrets come from: --secrets as
// given; the release's kept secrets on an upgrade or a retried install;
// else a fresh run of the bundled secretgen image in the cluster.
func (o *Install) secrets(ctx context.Context, c *Cluster, p *Prepared, state *ReleaseState, kept []byte, secretKeys []string, site SiteRegistry, step func(string, ...any)) (map[string]interface{}, string, error) {
	if o.SecretsFile != "" {
		data, err := os.ReadFile(o.SecretsFile)
		if err != nil {
			return nil, "", fmt.Errorf("%w: --secrets: %v", ErrSecrets, err)
		}
		m, err := parseSecrets(o.SecretsFile, data)
		if err != nil {
			return nil, "", err
		}
		if err := c.keepSecrets(ctx, o.Namespace, o.Release, data); err != nil {
			return nil, "", err
		}
		step("secrets: using %s", o.SecretsFile)
		return m, o.SecretsFile, nil
	}
	if kept != nil {
		m, err := parseSecrets("secret "+keptSecretName(o.Release), kept)
		if err != nil {
			return nil, "", err
		}
		step("secrets: reusing the secrets of release %s (Secret %s/%s)", o.Release, o.Namespace, keptSecretName(o.Release))
		return m, "", nil
	}
	if state.EverDeployed() {
		// Installed without p7bundle: the secrets are the top-level
		// values no chart defines (secretKeys).
		m := map[string]interface{}{}
		for _, k := range secretKeys {
			m[k] = state.Current.Config[k]
		}
		if len(m) == 0 {
			return nil, "", fmt.Errorf("%w: release %s has no secrets p7bundle can reuse: pass --secrets", ErrSecrets, o.Release)
		}
		step("secrets: reusing the deployed release's values %v", keys(m))
		return m, "", nil
	}
	if _, err := os.Lstat(o.SecretsOut); err == nil {
		return nil, "", fmt.Errorf("%w: %s already exists and is never overwritten: pass it with --secrets, or move it away", ErrSecrets, o.SecretsOut)
	}
	t, err := mirror.TargetFor(p.Manifest.Secretgen, site.Prefix)
	if err != nil {
		return nil, "", err
	}
	image := t.Ref(site.Host, "")
	step("secrets: running %s as a Job in %s", image, o.Namespace)
	out, err := c.secretgenJob(ctx, o.Namespace, image, site.Host, site.Username, site.Password, 10*time.Minute)
	if err != nil {
		return nil, "", err
	}
	m, err := parseSecrets("secretgen output", out)
	if err != nil {
		return nil, "", err
	}
	if err := writeNewSecretFile(o.SecretsOut, out); err != nil {
		return nil, "", err
	}
	if err := c.keepSecrets(ctx, o.Namespace, o.Release, out); err != nil {
		return nil, "", err
	}
	step("secrets: generated and written to %s (mode 0600). BACK IT UP: it is needed to reinstall this deployment", o.SecretsOut)
	return m, o.SecretsOut, nil
}

func keys(m map[string]interface{}) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func parseSecrets(name string, data []byte) (map[string]interface{}, error) {
	var m map[string]interface{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		// The YAML error may quote the content: say only where it is.
		return nil, fmt.Errorf("%w: %s is not a YAML map of values", ErrSecrets, name)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%w: %s holds no values", ErrSecrets, name)
	}
	return m, nil
}

func keptSecretName(release string) string { return release + "-p7bundle-secrets" }

// keepSecrets stores the secrets file in the namespace, beside Helm's own
// release records, so an upgrade or a retried install reuses it.
func (c *Cluster) keepSecrets(ctx context.Context, namespace, release string, data []byte) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: keptSecretName(release), Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "p7bundle", "p7bundle.io/release": release}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{secretsKey: data},
	}
	api := c.Clientset.CoreV1().Secrets(namespace)
	_, err := api.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("%w: keeping secrets in Secret %s/%s: %v", ErrSecrets, namespace, s.Name, err)
	}
	return nil
}

func (c *Cluster) keptSecrets(ctx context.Context, namespace, release string) ([]byte, error) {
	s, err := c.Clientset.CoreV1().Secrets(namespace).Get(ctx, keptSecretName(release), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading Secret %s/%s: %v", ErrSecrets, namespace, keptSecretName(release), err)
	}
	return s.Data[secretsKey], nil
}

// writeNewSecretFile writes a new secrets file; it never replaces one.
func writeNewSecretFile(path string, data []byte) error {
	if err := createPrivate(path, data); err != nil {
		return fmt.Errorf("%w: %v", ErrSecrets, err)
	}
	return nil
}

// PrintReport writes what the guide asks the admin to save.
func PrintReport(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n%s of release %s in namespace %s: revision %d, %s\n", strings.ToUpper(r.Action[:1])+r.Action[1:], r.Release, r.Namespace, r.Revision, r.Status)
	if e := r.Endpoints; e != nil {
		fmt.Fprintf(w, "\nSave these (give users the reverse proxy address, not the sign-in URL):\n")
		fmt.Fprintf(w, "  sign-in URL:   %s\n  admin URL:     %s\n  health check:  %s\n  worker nodes:  %s\n", e.SignInURL, e.AdminURL, e.HealthCheck, strings.Join(e.Nodes, ", "))
	}
	if r.Notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(r.Notes, "\n"))
	}
	if r.Backup != "" {
		fmt.Fprintf(w, "\nThe previous revision is backed up in %s\n", r.Backup)
	}
	fmt.Fprintf(w, "\nBack up: %s", r.ValuesFile)
	if r.SecretsFile != "" {
		fmt.Fprintf(w, ", %s", r.SecretsFile)
	}
	fmt.Fprintf(w, ", %s\n", r.LogFile)
}
