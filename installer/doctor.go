package installer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/probe"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// ErrDoctor: a site check FAILed; the report names each one.
var ErrDoctor = errors.New("site check failed")

// DefaultDoctorTimeout bounds each in-cluster probe: the pull on every
// node, and the probe Job.
const DefaultDoctorTimeout = 3 * time.Minute

// Doctor is `p7bundle doctor`: it checks the site the way the deployment
// guide asks (nodes, registry pulls from every node, PostgreSQL, SMTP and
// the NFS shares from inside the cluster, the values) and reports each
// check as PASS, WARN or FAIL. It changes nothing but the probe image it
// pushes and the labelled probe objects it deletes again.
type Doctor struct {
	Bundle string
	Signature
	Site                    SiteRegistry
	Files                   []string
	Sets                    manifests.Sets
	Namespace               string
	Kubeconfig, KubeContext string
	Timeout                 time.Duration // default DefaultDoctorTimeout
	Log                     io.Writer

	// Cluster and Client replace the clients Run builds (tests).
	Cluster *Cluster
	Client  *mirror.Client

	// Set by Install, which has them already.
	archive *bundle.Archive
	values  map[string]interface{}
}

// DoctorReport is every check, in the order run.
type DoctorReport struct {
	Checks []probe.Result `json:"checks"`
	Pass   int            `json:"pass"`
	Warn   int            `json:"warn"`
	Fail   int            `json:"fail"`
}

func (r *DoctorReport) add(res ...probe.Result) {
	for _, c := range res {
		switch c.Status {
		case probe.Pass:
			r.Pass++
		case probe.Warn:
			r.Warn++
		default:
			c.Status = probe.Fail
			r.Fail++
		}
		r.Checks = append(r.Checks, c)
	}
}

// Err is ErrDoctor naming the failed checks, or nil.
func (r *DoctorReport) Err() error {
	var failed []string
	for _, c := range r.Checks {
		if c.Status == probe.Fail {
			failed = append(failed, c.Check+" "+c.Key)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d FAIL: %s", ErrDoctor, len(failed), strings.Join(failed, "; "))
}

// PrintDoctor writes the report as a table: status, check, subject, detail, the guide's figure.
func PrintDoctor(w io.Writer, r *DoctorReport) {
	for _, c := range r.Checks {
		line := fmt.Sprintf("%-4s  %-13s %s", c.Status, c.Check, c.Detail)
		if c.Key != "" {
			line = fmt.Sprintf("%-4s  %-13s %s: %s", c.Status, c.Check, c.Key, c.Detail)
		}
		if c.Guide != "" {
			line += "  (guide: " + c.Guide + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "%d PASS, %d WARN, %d FAIL\n", r.Pass, r.Warn, r.Fail)
}

// Run runs every check. Only an error that stops the checks themselves
// (no bundle, no API server) is returned; failed checks are in the report
// and in r.Err().
func (d *Doctor) Run(ctx context.Context) (*DoctorReport, error) {
	o := *d
	site, err := o.Site.resolved()
	if err != nil {
		return nil, err
	}
	o.Site = site
	if o.Namespace == "" {
		o.Namespace = manifests.DefaultNamespace
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultDoctorTimeout
	}
	o.Log = orDiscard(o.Log)
	if err := site.checkCA(); err != nil {
		return nil, err
	}
	if o.Cluster == nil {
		if _, err := apiEndpoint(o.Kubeconfig, o.KubeContext); err != nil {
			return nil, err
		}
	}
	a := o.archive
	if a == nil {
		if a, err = o.Signature.open(ctx, o.Bundle, o.Log); err != nil {
			return nil, err
		}
		defer a.Close()
	}
	m := a.Manifest()
	cluster, client, err := connect(o.Site, o.Kubeconfig, o.KubeContext, o.Namespace, o.Cluster, o.Client, o.Log)
	if err != nil {
		return nil, err
	}
	rep := &DoctorReport{}
	pf, err := cluster.Check(ctx, o.Namespace, false)
	if err != nil {
		if errors.Is(err, ErrPreflight) && !errors.Is(err, context.Canceled) {
			rep.add(probe.Result{Check: "cluster", Status: probe.Fail, Detail: err.Error()})
			return rep, nil
		}
		return nil, err
	}
	rep.add(kubernetesCheck(pf))
	nodes, err := cluster.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: listing nodes: %v", ErrPreflight, err)
	}
	rep.add(nodeChecks(nodes.Items)...)

	values := o.values
	if values == nil {
		if values, err = o.siteValues(ctx, a, client); err != nil {
			return nil, err
		}
	}
	rep.add(valuesChecks(values)...)

	registryOK := true
	if err := client.Ping(ctx, o.Site.Host); err != nil {
		registryOK = false
		rep.add(probe.Result{Check: "registry", Key: o.Site.Host, Status: probe.Fail, Detail: "from this machine: " + mirror.Classify(err).Error()})
	} else {
		rep.add(probe.Result{Check: "registry", Key: o.Site.Host, Status: probe.Pass, Detail: "answers and accepts the credentials, from this machine"})
	}
	if m.Probe == "" {
		rep.add(probe.Result{Check: "probe", Status: probe.Warn, Detail: "bundle " + o.Bundle + " carries no site probe (built by an older p7bundle, or for no platform the probe is built for): the in-cluster checks are skipped"})
		return rep, nil
	}
	image, err := o.pushProbe(ctx, a, client, registryOK)
	if err != nil {
		// Probably there from an earlier run: the pull check tells.
		rep.add(probe.Result{Check: "probe", Status: probe.Warn, Detail: fmt.Sprintf("pushing the probe image %s: %v", image, err)})
	}
	user, _ := lookupString(values, "registry", "username")
	password, _ := lookupString(values, "registry", "password")
	run := &probeRun{c: cluster, namespace: o.Namespace, image: image, registry: o.Site.Host, user: user, password: password,
		timeout: o.Timeout, id: runID(), log: o.Log}
	defer run.cleanup(ctx)
	if err := run.start(ctx); err != nil {
		return nil, err
	}
	pulls, err := run.pullCheck(ctx, nodes.Items)
	if err != nil {
		return nil, err
	}
	rep.add(pulls...)
	inCluster, err := run.clusterCheck(ctx, probeTargets(values))
	if err != nil {
		return nil, err
	}
	rep.add(inCluster...)
	return rep, nil
}

// siteValues builds the values an install with the same flags would use.
func (o *Doctor) siteValues(ctx context.Context, a *bundle.Archive, client *mirror.Client) (map[string]interface{}, error) {
	site := o.Site
	if site.Username == "" {
		var err error
		if site.Username, site.Password, err = client.Credential(ctx, site.Host); err != nil {
			return nil, err
		}
	}
	chart, err := a.Chart()
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", o.Bundle, err)
	}
	p, err := prepareFrom(&Prepared{}, a.Manifest(), chart, valuesInput{Bundle: o.Bundle, Site: site, Files: o.Files, Sets: o.Sets})
	if err != nil {
		return nil, err
	}
	return p.Values.Values, nil
}

// pushProbe pushes the probe image alone, verified like every push, and
// returns its site reference.
func (o *Doctor) pushProbe(ctx context.Context, a *bundle.Archive, client *mirror.Client, registryOK bool) (string, error) {
	m := a.Manifest()
	t, err := mirror.TargetFor(m.Probe, o.Site.Prefix)
	if err != nil {
		return "", err
	}
	image := t.Ref(o.Site.Host, "")
	if !registryOK {
		return image, errors.New("the site registry refused this machine")
	}
	_, err = client.PushBundle(ctx, a, mirror.PushOptions{Registry: o.Site.Host, Prefix: o.Site.Prefix, Jobs: 2, Only: []string{m.Probe}})
	return image, err
}

func runID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// The guide's sizing ("Hardware resources summary").
const (
	guideWorkers        = 5
	guideWorkerCPU      = 8
	guideWorkerMemoryGB = 16
	guideCPCPU          = 4
	guideCPMemoryGB     = 8
	guideRootFreeGB     = 50
)

func kubernetesCheck(pf *Preflight) probe.Result {
	r := probe.Result{Check: "kubernetes", Status: probe.Pass, Detail: pf.ServerVersion, Guide: minKube + " to " + testedKube + " tested"}
	if len(pf.Warnings) > 0 {
		r.Status, r.Detail = probe.Warn, strings.Join(pf.Warnings, "; ")
	}
	return r
}

// nodeChecks compares every node with the guide's sizing. Sizing below it
// is a WARN: the cluster may still run, slowly. A node not Ready FAILs.
func nodeChecks(nodes []corev1.Node) []probe.Result {
	var out []probe.Result
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	cp, workers := 0, 0
	for _, n := range nodes {
		if isControlPlane(n) {
			cp++
		} else {
			workers++
		}
	}
	switch {
	case cp == 1 || cp == 3:
		out = append(out, probe.Result{Check: "control-plane", Status: probe.Pass, Detail: plural(cp, "dedicated control-plane node"), Guide: "1 or 3"})
	case cp == 0:
		out = append(out, probe.Result{Check: "control-plane", Status: probe.Warn, Detail: "no node is labelled control-plane: pSeven shares nodes with the control plane", Guide: "1 or 3 dedicated control-plane nodes"})
	default:
		out = append(out, probe.Result{Check: "control-plane", Status: probe.Warn, Detail: plural(cp, "control-plane node"), Guide: "1 or 3 (an odd number for etcd quorum)"})
	}
	w := probe.Result{Check: "workers", Status: probe.Pass, Detail: plural(workers, "worker node"), Guide: fmt.Sprintf("%d or more", guideWorkers)}
	if workers < guideWorkers {
		w.Status = probe.Warn
	}
	out = append(out, w)
	for _, n := range nodes {
		out = append(out, nodeCheck(n))
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func nodeCheck(n corev1.Node) probe.Result {
	cpu, memGB := guideWorkerCPU, guideWorkerMemoryGB
	role := "worker"
	if isControlPlane(n) {
		cpu, memGB, role = guideCPCPU, guideCPMemoryGB, "control plane"
	}
	c := n.Status.Capacity
	haveCPU := c.Cpu().MilliValue()
	haveMem := c.Memory().Value()
	eph := c.StorageEphemeral().Value()
	rt := n.Status.NodeInfo.ContainerRuntimeVersion
	r := probe.Result{Check: "node", Key: n.Name, Status: probe.Pass,
		Detail: fmt.Sprintf("%s: %s CPU, %.1f GB RAM, %.0f GB ephemeral storage, runtime %s, kubelet %s",
			role, c.Cpu().String(), float64(haveMem)/1e9, float64(eph)/1e9, rt, n.Status.NodeInfo.KubeletVersion),
		Guide: fmt.Sprintf("%s: %d CPU, %d GB RAM, %d GB free on /", role, cpu, memGB, guideRootFreeGB)}
	var problems []string
	// Memory a little under the round figure (firmware, kernel) still counts.
	if haveCPU < int64(cpu)*1000 {
		problems = append(problems, fmt.Sprintf("%s CPU < %d", c.Cpu().String(), cpu))
	}
	if haveMem < int64(memGB)*1e9*9/10 {
		problems = append(problems, fmt.Sprintf("%.1f GB RAM < %d", float64(haveMem)/1e9, memGB))
	}
	if eph > 0 && eph < guideRootFreeGB*1e9 {
		problems = append(problems, fmt.Sprintf("%.0f GB ephemeral storage < %d", float64(eph)/1e9, guideRootFreeGB))
	}
	if strings.HasPrefix(rt, "docker://") {
		problems = append(problems, "runtime "+rt+" (dockershim): Kubernetes 1.24+ needs a CRI v1 runtime")
	}
	if len(problems) > 0 {
		r.Status = probe.Warn
		r.Detail += "; below the guide: " + strings.Join(problems, ", ")
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
			r.Status = probe.Fail
			r.Detail = "not Ready: " + cond.Reason + " " + cond.Message + "; " + r.Detail
		}
	}
	return r
}

// valuesChecks WARNs about what the guide says to set and the values leave
// empty, naming the key.
func valuesChecks(values map[string]interface{}) []probe.Result {
	var out []probe.Result
	warn := func(key, detail, guide string) {
		out = append(out, probe.Result{Check: "values", Key: key, Status: probe.Warn, Detail: detail, Guide: guide})
	}
	if hosts, ok := lookup(values, "entrypoint", "allowedHosts").([]interface{}); ok {
		for _, h := range hosts {
			if h == "*" {
				warn("entrypoint.allowedHosts", `"*" accepts any Host header`, "replace \"*\" with your reverse proxy address")
			}
		}
	}
	t := probeTargets(values)
	out = append(out, t.warnings...)
	if t.postgres == "" {
		if _, ok := lookup(values, "postgres").(map[string]interface{}); ok {
			warn("postgres.host", "empty: pSeven has no database", "set all postgres.* to your PostgreSQL server")
		}
	}
	if t.smtp == "" {
		if _, ok := lookup(values, "smtp").(map[string]interface{}); ok {
			warn("smtp.host", "empty: no password reset links or notifications", "optional")
		}
	}
	if len(t.shares) == 0 && len(t.warnings) == 0 {
		warn("storage", "no NFS share (a server and a path) found under storage.*", "set all storage.* to your NFS shares")
	}
	return out
}

// targets are what the probe Job checks, from the values.
type targets struct {
	postgres, smtp string // KEY=HOST:PORT for the probe's flags
	smtpTLS        bool
	shares         []nfsShare
	warnings       []probe.Result
}

type nfsShare struct {
	Key, Server, Path string
}

func probeTargets(values map[string]interface{}) targets {
	var t targets
	if host, _ := lookupString(values, "postgres", "host"); host != "" {
		t.postgres = "postgres.host=" + hostPort(host, lookup(values, "postgres", "port"), "5432")
	}
	if host, _ := lookupString(values, "smtp", "host"); host != "" {
		port := lookup(values, "smtp", "port")
		t.smtp = "smtp.host=" + hostPort(host, port, "25")
		t.smtpTLS = fmt.Sprint(port) == "465"
	}
	if storage, ok := lookup(values, "storage").(map[string]interface{}); ok {
		walkShares("storage", storage, &t)
	}
	sort.Slice(t.shares, func(i, j int) bool { return t.shares[i].Key < t.shares[j].Key })
	return t
}

// walkShares finds NFS shares the way charts write them: a map with a
// "server" and one or more keys ending in "path" (storage.nfs.{server,
// dataPath, homePath}; storage.userData.{server, path}).
func walkShares(prefix string, m map[string]interface{}, t *targets) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	server, hasServer := m["server"].(string)
	for _, k := range keys {
		key := prefix + "." + k
		switch v := m[k].(type) {
		case map[string]interface{}:
			walkShares(key, v, t)
		case string:
			if !hasServer || !strings.HasSuffix(strings.ToLower(k), "path") {
				continue
			}
			switch {
			case v == "":
				t.warnings = append(t.warnings, probe.Result{Check: "values", Key: key, Status: probe.Warn, Detail: "empty", Guide: "set all storage.* to your NFS shares"})
			case server == "":
				t.warnings = append(t.warnings, probe.Result{Check: "values", Key: prefix + ".server", Status: probe.Warn, Detail: "empty, so " + key + " cannot be mounted", Guide: "set all storage.* to your NFS shares"})
			default:
				t.shares = append(t.shares, nfsShare{Key: key, Server: server, Path: v})
			}
		}
	}
}

func hostPort(host string, port interface{}, def string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host // already HOST:PORT
	}
	p := fmt.Sprint(port)
	if port == nil || p == "" || p == "0" {
		p = def
	}
	return net.JoinHostPort(host, p)
}

func lookup(m map[string]interface{}, path ...string) interface{} {
	var v interface{} = m
	for _, p := range path {
		mm, ok := v.(map[string]interface{})
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func lookupString(m map[string]interface{}, path ...string) (string, bool) {
	s, ok := lookup(m, path...).(string)
	return s, ok
}
