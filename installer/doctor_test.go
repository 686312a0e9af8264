package installer

import (
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/p7bundle/p7bundle/internal/probe"
)

func TestProbeTargetsFromValues(t *testing.T) {
	values := map[string]interface{}{
		"postgres":   map[string]interface{}{"host": "db.site", "port": 6432},
		"smtp":       map[string]interface{}{"host": "mail.site", "port": 465},
		"entrypoint": map[string]interface{}{"allowedHosts": []interface{}{"pseven.site", "*"}},
		"storage": map[string]interface{}{
			// The fixture's form: one server, several paths.
			"nfs": map[string]interface{}{"server": "nfs1", "dataPath": "/srv/data", "homePath": "/srv/home"},
			// The guide's data segregation: a server per share.
			"shared": map[string]interface{}{"server": "nfs2", "path": "/srv/shared", "readOnly": false},
			"apps":   map[string]interface{}{"server": "", "path": "/srv/apps"},
			"quota":  map[string]interface{}{"server": "nfs3", "path": ""},
		},
	}
	tg := probeTargets(values)
	if tg.postgres != "postgres.host=db.site:6432" || tg.smtp != "smtp.host=mail.site:465" || !tg.smtpTLS {
		t.Errorf("targets %+v", tg)
	}
	var shares []string
	for _, s := range tg.shares {
		shares = append(shares, s.Key+"="+s.Server+":"+s.Path)
	}
	if got := strings.Join(shares, " "); got != "storage.nfs.dataPath=nfs1:/srv/data storage.nfs.homePath=nfs1:/srv/home storage.shared.path=nfs2:/srv/shared" {
		t.Errorf("shares %s", got)
	}
	warned := map[string]bool{}
	for _, r := range valuesChecks(values) {
		if r.Status != probe.Warn {
			t.Errorf("values check %+v is not a WARN", r)
		}
		warned[r.Key] = true
	}
	for _, k := range []string{"entrypoint.allowedHosts", "storage.apps.server", "storage.quota.path"} {
		if !warned[k] {
			t.Errorf("no WARN naming %s (got %v)", k, warned)
		}
	}
	if warned["postgres.host"] || warned["smtp.host"] {
		t.Errorf("set keys warned about: %v", warned)
	}

	// The chart defaults: every guide key empty.
	empty := map[string]interface{}{
		"postgres": map[string]interface{}{"host": "", "port": 5432},
		"smtp":     map[string]interface{}{"host": ""},
		"storage":  map[string]interface{}{"nfs": map[string]interface{}{"server": "", "dataPath": "", "homePath": ""}},
	}
	warned = map[string]bool{}
	for _, r := range valuesChecks(empty) {
		warned[r.Key] = true
	}
	for _, k := range []string{"postgres.host", "smtp.host", "storage.nfs.dataPath", "storage.nfs.homePath"} {
		if !warned[k] {
			t.Errorf("defaults: no WARN naming %s (got %v)", k, warned)
		}
	}
	if tg := probeTargets(empty); tg.postgres != "" || tg.smtp != "" || len(tg.shares) != 0 {
		t.Errorf("defaults give targets %+v", tg)
	}
	if got := hostPort("db:7000", 5432, "5432"); got != "db:7000" {
		t.Errorf("host with a port: %s", got)
	}
	if got := hostPort("fd00::1", nil, "5432"); got != "[fd00::1]:5432" {
		t.Errorf("IPv6 host: %s", got)
	}
}

// guideNode is node (installer_test.go) with what doctor also reads.
func guideNode(name string, cpu, mem, eph string, controlPlane bool, ready corev1.ConditionStatus) corev1.Node {
	n := node(name, "10.0.0.1", mem, cpu, controlPlane)
	n.Status.Capacity[corev1.ResourceEphemeralStorage] = resource.MustParse(eph)
	n.Status.NodeInfo.ContainerRuntimeVersion = "containerd://1.7.24"
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "KubeletNotReady"}}
	return n
}

func TestNodeChecksAgainstTheGuide(t *testing.T) {
	nodes := []corev1.Node{
		guideNode("cp", "4", "8Gi", "80G", true, corev1.ConditionTrue),
		guideNode("w1", "8", "15.6Gi", "100G", false, corev1.ConditionTrue), // a little under 16 GB counts
		guideNode("w2", "4", "16Gi", "100G", false, corev1.ConditionTrue),
		guideNode("w3", "8", "16Gi", "20G", false, corev1.ConditionTrue),
		guideNode("w4", "8", "16Gi", "100G", false, corev1.ConditionFalse),
	}
	got := map[string]probe.Result{}
	for _, r := range nodeChecks(nodes) {
		got[r.Check+" "+r.Key] = r
	}
	for k, want := range map[string]string{
		"control-plane ": probe.Pass, "workers ": probe.Warn, // 4 < 5
		"node cp": probe.Pass, "node w1": probe.Pass, "node w2": probe.Warn, "node w3": probe.Warn, "node w4": probe.Fail,
	} {
		if got[k].Status != want {
			t.Errorf("%s = %s, want %s: %s", k, got[k].Status, want, got[k].Detail)
		}
	}
	if d := got["node w2"].Detail; !strings.Contains(d, "below the guide: 4 CPU < 8") {
		t.Errorf("w2: %s", d)
	}
	if d := got["node w3"].Detail; !strings.Contains(d, "20 GB ephemeral storage < 50") {
		t.Errorf("w3: %s", d)
	}
	if g := got["node cp"].Guide; g != "control plane: 4 CPU, 8 GB RAM, 50 GB free on /" {
		t.Errorf("cp guide: %s", g)
	}
	two := nodeChecks([]corev1.Node{guideNode("a", "4", "8Gi", "80G", true, corev1.ConditionTrue), guideNode("b", "4", "8Gi", "80G", true, corev1.ConditionTrue)})
	if two[0].Check != "control-plane" || two[0].Status != probe.Warn {
		t.Errorf("2 control-plane nodes: %+v", two[0])
	}
}

func TestPullFailureNamesTheCause(t *testing.T) {
	for msg, want := range map[string]string{
		`failed to pull and unpack image "r:5000/pseven/p7bundle-probe:dev": failed to resolve reference: failed to do request: Head "https://r:5000/v2/pseven/p7bundle-probe/manifests/dev": tls: failed to verify certificate: x509: certificate signed by unknown authority`: "x509:",
		`failed to resolve reference "r:5000/x:1": pulling from host r:5000 failed with status code [manifests 1]: 401 Unauthorized`:                                                                                                                                            "401:",
		`failed to resolve reference "r:5000/x:1": r:5000/x:1: not found`:                                      "not found:",
		`failed to do request: Head "https://r:5000/v2/": dial tcp 10.0.0.1:5000: connect: connection refused`: "unreachable:",
		`something else went wrong`: "pull failed",
	} {
		if got := pullFailure(msg); !strings.HasPrefix(got, want) || !strings.Contains(got, "kubelet: "+msg[:20]) {
			t.Errorf("%q -> %q, want %s", msg, got, want)
		}
	}
}

func TestPullResultFromPodStatus(t *testing.T) {
	r := &probeRun{image: "r/pseven/p7bundle-probe:dev"}
	running := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}
	if res, done := r.pullResult(t.Context(), running); !done || res.Status != probe.Pass {
		t.Errorf("running: %+v %v", res, done)
	}
	creating := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}}}
	if _, done := r.pullResult(t.Context(), creating); done {
		t.Error("ContainerCreating decided")
	}
}

func TestDoctorReportErr(t *testing.T) {
	rep := &DoctorReport{}
	rep.add(probe.Result{Check: "pull", Key: "n1", Status: probe.Pass}, probe.Result{Check: "values", Key: "smtp.host", Status: probe.Warn})
	if rep.Err() != nil || rep.Pass != 1 || rep.Warn != 1 {
		t.Fatalf("no FAIL: %v %+v", rep.Err(), rep)
	}
	rep.add(probe.Result{Check: "pull", Key: "n2", Status: "bogus"})
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "1 FAIL: pull n2") || rep.Fail != 1 {
		t.Errorf("unknown status counts as FAIL: %v", err)
	}
	var b strings.Builder
	PrintDoctor(&b, rep)
	if !strings.Contains(b.String(), "FAIL  pull          n2: ") || !strings.Contains(b.String(), "1 PASS, 1 WARN, 1 FAIL") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestDoctorSweepsWhatAKilledRunLeft(t *testing.T) {
	kube := fake.NewSimpleClientset()
	ctx := t.Context()
	now := time.Now()
	mk := func(name, id string, age time.Duration) {
		meta := metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{doctorLabel: id},
			CreationTimestamp: metav1.NewTime(now.Add(-age))}
		kube.AppsV1().DaemonSets("ns").Create(ctx, &appsv1.DaemonSet{ObjectMeta: meta}, metav1.CreateOptions{})
		kube.BatchV1().Jobs("ns").Create(ctx, &batchv1.Job{ObjectMeta: meta}, metav1.CreateOptions{})
		kube.CoreV1().Secrets("ns").Create(ctx, &corev1.Secret{ObjectMeta: meta}, metav1.CreateOptions{})
	}
	mk("killed", "aaaaaa", 2*time.Hour)
	mk("running", "bbbbbb", time.Minute)
	mk("mine", "cccccc", 2*time.Hour) // this run's own: never swept
	unrelated := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pseven-rl-registry", Namespace: "ns", CreationTimestamp: metav1.NewTime(now.Add(-48 * time.Hour))}}
	kube.CoreV1().Secrets("ns").Create(ctx, unrelated, metav1.CreateOptions{})

	var log strings.Builder
	r := &probeRun{c: &Cluster{Clientset: kube}, namespace: "ns", id: "cccccc", log: &log}
	r.sweepStale(ctx, now)
	ds, _ := kube.AppsV1().DaemonSets("ns").List(ctx, metav1.ListOptions{})
	jobs, _ := kube.BatchV1().Jobs("ns").List(ctx, metav1.ListOptions{})
	secrets, _ := kube.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{})
	names := func(n int, get func(int) string) string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, get(i))
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	if got := names(len(ds.Items), func(i int) string { return ds.Items[i].Name }); got != "mine,running" {
		t.Errorf("DaemonSets left: %s", got)
	}
	if got := names(len(jobs.Items), func(i int) string { return jobs.Items[i].Name }); got != "mine,running" {
		t.Errorf("Jobs left: %s", got)
	}
	if got := names(len(secrets.Items), func(i int) string { return secrets.Items[i].Name }); got != "mine,pseven-rl-registry,running" {
		t.Errorf("Secrets left: %s", got)
	}
	if !strings.Contains(log.String(), "deleting DaemonSet killed, left by an earlier doctor run") {
		t.Errorf("log: %s", log.String())
	}
}

func TestProbeJobPod(t *testing.T) {
	r := &probeRun{image: "reg:5000/pseven/p7bundle-probe:v1", id: "abc123"}
	if spec, _ := r.checkPodSpec(targets{}); spec != nil {
		t.Fatalf("nothing to check, yet a pod: %+v", spec)
	}
	spec, volumeKey := r.checkPodSpec(targets{postgres: "postgres.host=db:5432", smtp: "smtp.host=mail:465", smtpTLS: true,
		shares: []nfsShare{{Key: "storage.nfs.dataPath", Server: "nfs1", Path: "/srv/data"}, {Key: "storage.shared.path", Server: "nfs2", Path: "/srv/shared"}}})
	sc := spec.SecurityContext
	if *sc.RunAsUser != probe.UID || !*sc.RunAsNonRoot || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		spec.NodeSelector[corev1.LabelOSStable] != "linux" || spec.RestartPolicy != corev1.RestartPolicyNever || *spec.AutomountServiceAccountToken {
		t.Errorf("pod security: %+v", spec)
	}
	if len(spec.Volumes) != 2 || spec.Volumes[1].NFS == nil || spec.Volumes[1].NFS.Server != "nfs2" || spec.Volumes[1].NFS.Path != "/srv/shared" ||
		volumeKey["share-1"] != "storage.shared.path" {
		t.Errorf("volumes %+v, keys %v", spec.Volumes, volumeKey)
	}
	main := spec.Containers[0]
	if got := strings.Join(main.Args, " "); got != "check --postgres postgres.host=db:5432 --smtp smtp.host=mail:465+tls --share storage.nfs.dataPath=/shares/0 --share storage.shared.path=/shares/1" {
		t.Errorf("args: %s", got)
	}
	if main.ImagePullPolicy != corev1.PullAlways || !*main.SecurityContext.ReadOnlyRootFilesystem || main.SecurityContext.Capabilities.Drop[0] != "ALL" {
		t.Errorf("probe container: %+v", main)
	}
	// The root check runs first, as root, on the same mounts.
	if len(spec.InitContainers) != 1 {
		t.Fatalf("init containers: %+v", spec.InitContainers)
	}
	root := spec.InitContainers[0]
	if got := strings.Join(root.Args, " "); got != "check --root --share storage.nfs.dataPath=/shares/0 --share storage.shared.path=/shares/1" ||
		*root.SecurityContext.RunAsUser != 0 || *root.SecurityContext.RunAsNonRoot || len(root.VolumeMounts) != 2 {
		t.Errorf("root container: %s %+v", got, root.SecurityContext)
	}
	if main.SecurityContext.RunAsNonRoot != nil || main.SecurityContext.RunAsUser != nil { // the pod's: 11111, non-root
		t.Error("the root container's settings leaked into the probe container")
	}
}
