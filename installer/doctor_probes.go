package installer

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/p7bundle/p7bundle/internal/probe"
)

// mountGrace is how long the probe Job waits, after one share failed to
// mount, for the kubelet to report the others.
const mountGrace = 20 * time.Second

// doctorLabel marks every object a doctor run creates, valued with its run id.
const doctorLabel = "p7bundle.io/doctor"

// probeRun is one doctor run's objects in the cluster: a pull secret, the
// pull DaemonSet and the probe Job, all labelled with the run id and
// deleted by cleanup, also when ctx is cancelled (Ctrl-C).
type probeRun struct {
	c                        *Cluster
	namespace, image         string
	registry, user, password string
	timeout                  time.Duration
	id                       string
	log                      io.Writer
}

func (r *probeRun) name(what string) string { return "p7bundle-doctor-" + r.id + "-" + what }

func (r *probeRun) labels() map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "p7bundle", doctorLabel: r.id}
}

// start creates the pull secret: the credentials the release will pull
// with (registry.username/password of the values).
func (r *probeRun) start(ctx context.Context) error {
	r.sweepStale(ctx, time.Now())
	s := pullSecret(r.name("pull"), r.namespace, r.registry, r.user, r.password, r.labels())
	if _, err := r.c.Clientset.CoreV1().Secrets(r.namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("%w: creating the doctor's pull secret in %s: %v", ErrPreflight, r.namespace, err)
	}
	return nil
}

// cleanup deletes everything labelled with this run, waiting (briefly)
// until the pods are gone so no probe object is left behind.
func (r *probeRun) cleanup(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	sel := metav1.ListOptions{LabelSelector: doctorLabel + "=" + r.id}
	fg := metav1.DeletePropagationForeground
	del := metav1.DeleteOptions{PropagationPolicy: &fg}
	apps, batch, core := r.c.Clientset.AppsV1(), r.c.Clientset.BatchV1(), r.c.Clientset.CoreV1()
	apps.DaemonSets(r.namespace).DeleteCollection(ctx, del, sel)
	batch.Jobs(r.namespace).DeleteCollection(ctx, del, sel)
	core.Pods(r.namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	core.Secrets(r.namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := core.Pods(r.namespace).List(ctx, sel)
		return err == nil && len(pods.Items) == 0, nil
	})
}

// staleAfter is when another run's probe objects count as left behind by
// a doctor that was killed (SIGKILL, a lost machine) rather than running.
const staleAfter = time.Hour

// sweepStale deletes the probe objects of earlier runs older than
// staleAfter, so a killed doctor leaves nothing behind for long.
func (r *probeRun) sweepStale(ctx context.Context, now time.Time) {
	sel := metav1.ListOptions{LabelSelector: doctorLabel + "," + doctorLabel + "!=" + r.id}
	old := func(m metav1.ObjectMeta) bool { return now.Sub(m.CreationTimestamp.Time) > staleAfter }
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	apps, batch, core := r.c.Clientset.AppsV1(), r.c.Clientset.BatchV1(), r.c.Clientset.CoreV1()
	if l, err := apps.DaemonSets(r.namespace).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			if old(o.ObjectMeta) {
				fmt.Fprintf(r.log, "doctor: deleting DaemonSet %s, left by an earlier doctor run\n", o.Name)
				apps.DaemonSets(r.namespace).Delete(ctx, o.Name, del)
			}
		}
	}
	if l, err := batch.Jobs(r.namespace).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			if old(o.ObjectMeta) {
				fmt.Fprintf(r.log, "doctor: deleting Job %s, left by an earlier doctor run\n", o.Name)
				batch.Jobs(r.namespace).Delete(ctx, o.Name, del)
			}
		}
	}
	if l, err := core.Secrets(r.namespace).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			if old(o.ObjectMeta) {
				fmt.Fprintf(r.log, "doctor: deleting Secret %s, left by an earlier doctor run\n", o.Name)
				core.Secrets(r.namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
			}
		}
	}
}

func (r *probeRun) podSpec(args []string) corev1.PodSpec {
	uid, yes, no, grace := int64(probe.UID), true, false, int64(1)
	return corev1.PodSpec{
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: r.name("pull")}},
		// The probe is a Linux program (pSeven's Windows extension nodes are not Kubernetes nodes).
		NodeSelector:                  map[string]string{corev1.LabelOSStable: "linux"},
		AutomountServiceAccountToken:  &no,
		TerminationGracePeriodSeconds: &grace,
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &yes,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name: "probe", Image: r.image, Args: args,
			// Always: the point is that this node pulls from the registry now.
			ImagePullPolicy: corev1.PullAlways,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
	}
}

// pullCheck runs the probe image on every node (a DaemonSet that
// tolerates every taint) and reports, per node, whether the kubelet pulled
// it from the site registry, else the kubelet's reason.
func (r *probeRun) pullCheck(ctx context.Context, nodes []corev1.Node) ([]probe.Result, error) {
	spec := r.podSpec([]string{"idle"})
	spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	nodes = slices.DeleteFunc(slices.Clone(nodes), func(n corev1.Node) bool {
		os, ok := n.Labels[corev1.LabelOSStable]
		return ok && os != "linux"
	})
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{doctorLabel: r.id, "p7bundle.io/probe": "pull"}}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: r.name("pull"), Namespace: r.namespace, Labels: r.labels()},
		Spec: appsv1.DaemonSetSpec{Selector: sel, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: merge(r.labels(), sel.MatchLabels)}, Spec: spec}},
	}
	if _, err := r.c.Clientset.AppsV1().DaemonSets(r.namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("%w: creating the pull-check DaemonSet in %s: %v", ErrPreflight, r.namespace, err)
	}
	fmt.Fprintf(r.log, "doctor: pulling %s on %d nodes (DaemonSet %s)\n", r.image, len(nodes), ds.Name)
	guide := "every node pulls from the site registry: its CA on the node, the registry.* credentials"
	results := map[string]probe.Result{}
	pending := map[string]probe.Result{} // failures younger than pullRetryWindow
	failingSince := map[string]time.Time{}
	err := wait.PollUntilContextTimeout(ctx, time.Second, r.timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := r.c.Clientset.CoreV1().Pods(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sel)})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName == "" {
				continue
			}
			res, done := r.pullResult(ctx, &p)
			if !done {
				continue
			}
			res.Key, res.Guide = p.Spec.NodeName, guide
			// A kubelet that has not yet seen the pull secret pulls once
			// without it: a failure counts once it outlasts the retry.
			if res.Status == probe.Fail {
				if _, ok := failingSince[p.Name]; !ok {
					failingSince[p.Name] = time.Now()
				}
				if time.Since(failingSince[p.Name]) < pullRetryWindow {
					pending[p.Spec.NodeName] = res
					continue
				}
			}
			results[p.Spec.NodeName] = res
		}
		return len(results) >= len(nodes), nil
	})
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var out []probe.Result
	for _, n := range nodes {
		res, ok := results[n.Name]
		if !ok {
			res, ok = pending[n.Name]
		}
		if !ok {
			res = probe.Result{Check: "pull", Key: n.Name, Status: probe.Fail, Guide: guide,
				Detail: fmt.Sprintf("no probe pod running on this node after %s: %s", r.timeout, r.nodePodState(ctx, sel, n.Name))}
		}
		out = append(out, res)
	}
	return out, nil
}

// pullRetryWindow is how long a pull failure must last to count: past the
// kubelet's first image pull back-off (10 s) and the retry after it.
const pullRetryWindow = 25 * time.Second

// pullResult decides one pull-check pod: running, or failing to pull.
func (r *probeRun) pullResult(ctx context.Context, p *corev1.Pod) (probe.Result, bool) {
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if s.State.Running != nil {
			return probe.Result{Check: "pull", Status: probe.Pass, Detail: "pulled " + r.image + " (" + s.ImageID + ")"}, true
		}
		if w := s.State.Waiting; w != nil && isPullFailure(w.Reason) {
			return probe.Result{Check: "pull", Status: probe.Fail, Detail: pullFailure(r.pullCause(ctx, p.Name, w))}, true
		}
	}
	return probe.Result{}, false
}

func isPullFailure(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable":
		return true
	}
	return false
}

// pullFailure names the cause the kubelet gave, and the fix.
func pullFailure(msg string) string {
	l := strings.ToLower(msg)
	var cause string
	switch {
	case strings.Contains(l, "x509") || strings.Contains(l, "certificate"):
		cause = "x509: the node does not trust the registry's certificate (install the registry CA in this node's container runtime)"
	case strings.Contains(l, "401") || strings.Contains(l, "unauthorized") || strings.Contains(l, "authorization failed") || strings.Contains(l, "403"):
		cause = "401: the registry refused registry.username/registry.password"
	case strings.Contains(l, "not found") || strings.Contains(l, "manifest unknown"):
		cause = "not found: the image is not in the site registry"
	case strings.Contains(l, "no such host") || strings.Contains(l, "connection refused") || strings.Contains(l, "i/o timeout") || strings.Contains(l, "no route"):
		cause = "unreachable: the node cannot reach the registry"
	default:
		cause = "pull failed"
	}
	return cause + "; kubelet: " + kubeletMessage(msg)
}

// podEvents are the messages of the events with reason about pod name, oldest first.
func (r *probeRun) podEvents(ctx context.Context, pod, reason string) []string {
	var msgs []string
	for _, e := range r.c.podEvents(ctx, r.namespace, pod) {
		if e.Reason == reason {
			msgs = append(msgs, e.Message)
		}
	}
	return msgs
}

// pullCause is the kubelet's reason for a failed pull: the waiting
// message of ErrImagePull, else the newest "Failed to pull image" event
// (ImagePullBackOff's own message drops the cause).
func (r *probeRun) pullCause(ctx context.Context, pod string, w *corev1.ContainerStateWaiting) string {
	if w.Reason == "ErrImagePull" && w.Message != "" {
		return w.Message
	}
	msgs := r.podEvents(ctx, pod, "Failed")
	for i := len(msgs) - 1; i >= 0; i-- {
		if strings.HasPrefix(msgs[i], "Failed to pull image") {
			return msgs[i]
		}
	}
	if w.Message != "" {
		return w.Message
	}
	return w.Reason
}

// kubeletMessage keeps a kubelet message to one line, without the mount
// command lines that only repeat what the check already names.
func kubeletMessage(msg string) string {
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "Mounting command:") && !strings.HasPrefix(l, "Mounting arguments:") {
			keep = append(keep, l)
		}
	}
	return trim(strings.Join(keep, " | "))
}

func (r *probeRun) nodePodState(ctx context.Context, sel *metav1.LabelSelector, node string) string {
	pods, err := r.c.Clientset.CoreV1().Pods(r.namespace).List(context.WithoutCancel(ctx), metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sel)})
	if err != nil {
		return err.Error()
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node {
			return podReason(&p)
		}
	}
	return "no pod scheduled (node NotReady, or out of pods?)"
}

// clusterCheck runs the probe Job: TCP to PostgreSQL and SMTP, and every
// NFS share mounted as a volume, checked as UID 11111.
func (r *probeRun) clusterCheck(ctx context.Context, t targets) ([]probe.Result, error) {
	spec, volumeKey := r.checkPodSpec(t)
	if spec == nil {
		return nil, nil // nothing set to check: the values checks said so
	}
	args := spec.Containers[0].Args[1:]
	backoff, ttl := int32(0), int32(600)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: r.name("check"), Namespace: r.namespace, Labels: r.labels()},
		Spec: batchv1.JobSpec{BackoffLimit: &backoff, TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: r.labels()}, Spec: *spec}},
	}
	if _, err := r.c.Clientset.BatchV1().Jobs(r.namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("%w: creating the probe Job in %s: %v", ErrPreflight, r.namespace, err)
	}
	fmt.Fprintf(r.log, "doctor: probe Job %s checks %s\n", job.Name, strings.Join(args, " "))
	var pod *corev1.Pod
	mountFailures := map[string]string{}
	var firstMountFailure time.Time
	err := wait.PollUntilContextTimeout(ctx, time.Second, r.timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := r.c.Clientset.CoreV1().Pods(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job.Name})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		pod = &pods.Items[0]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return true, nil
		}
		if res, failed := r.pullResult(ctx, pod); failed && res.Status == probe.Fail {
			return true, nil
		}
		// A share that does not mount keeps the pod in ContainerCreating:
		// the kubelet's FailedMount event names the volume.
		// The kubelet mounts volumes one after another: give the others
		// a moment to fail too, so one run names every bad share.
		for _, msg := range r.podEvents(ctx, pod.Name, "FailedMount") {
			for v, key := range volumeKey {
				if strings.Contains(msg, `"`+v+`"`) {
					mountFailures[key] = msg
				}
			}
		}
		if len(mountFailures) > 0 && firstMountFailure.IsZero() {
			firstMountFailure = time.Now()
		}
		if len(mountFailures) == 0 {
			return false, nil
		}
		return len(mountFailures) == len(volumeKey) || time.Since(firstMountFailure) > mountGrace, nil
	})
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(mountFailures) > 0 {
		var out []probe.Result
		for _, s := range t.shares {
			if msg, ok := mountFailures[s.Key]; ok {
				out = append(out, probe.Result{Check: "nfs-mount", Key: s.Key, Status: probe.Fail,
					Detail: fmt.Sprintf("%s:%s does not mount on node %s; kubelet: %s", s.Server, s.Path, pod.Spec.NodeName, kubeletMessage(msg)),
					Guide:  "NFSv3 export; nfs-common (mount.nfs) on every node"})
			}
		}
		return append(out, probe.Result{Check: "probe", Status: probe.Warn, Detail: "PostgreSQL, SMTP and the other shares were not checked: the probe cannot start while a share does not mount"}), nil
	}
	if pod == nil {
		return []probe.Result{{Check: "probe", Status: probe.Fail, Detail: fmt.Sprintf("the probe Job %s started no pod in %s", job.Name, r.timeout)}}, nil
	}
	if res, failed := r.pullResult(ctx, pod); failed && res.Status == probe.Fail {
		res.Check, res.Key = "probe", pod.Spec.NodeName
		return []probe.Result{res}, nil
	}
	if pod.Status.Phase != corev1.PodSucceeded {
		return []probe.Result{{Check: "probe", Status: probe.Fail, Detail: fmt.Sprintf("the probe pod %s did not finish in %s: %s", pod.Name, r.timeout, podReason(pod))}}, nil
	}
	var results []probe.Result
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		logs, err := r.c.Clientset.CoreV1().Pods(r.namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c.Name}).Stream(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: reading the probe's output: %v", ErrPreflight, err)
		}
		results = append(results, probe.Parse(io.LimitReader(logs, 1<<20))...)
		logs.Close()
	}
	for i := range results {
		results[i].Detail += " (from node " + pod.Spec.NodeName + ")"
	}
	return results, nil
}

// checkPodSpec is the probe Job's pod: the checks as UID 11111, every
// share an nfs volume, and the root check first; nil when there is
// nothing to check. volumeKey maps each volume to its values key.
func (r *probeRun) checkPodSpec(t targets) (spec *corev1.PodSpec, volumeKey map[string]string) {
	var args []string
	if t.postgres != "" {
		args = append(args, "--postgres", t.postgres)
	}
	if t.smtp != "" {
		smtp := t.smtp
		if t.smtpTLS {
			smtp += "+tls"
		}
		args = append(args, "--smtp", smtp)
	}
	ps := r.podSpec(nil)
	spec = &ps
	spec.RestartPolicy = corev1.RestartPolicyNever
	volumeKey, mountOf := map[string]string{}, map[string]string{}
	for i, s := range t.shares {
		v := "share-" + strconv.Itoa(i)
		volumeKey[v] = s.Key
		mount := "/shares/" + strconv.Itoa(i)
		mountOf[s.Key] = mount
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: s.Server, Path: s.Path}}})
		spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: v, MountPath: mount})
		args = append(args, "--share", s.Key+"="+mount)
	}
	if len(args) == 0 {
		return nil, nil
	}
	spec.Containers[0].Args = append([]string{"check"}, args...)
	if len(t.shares) > 0 {
		// pSeven writes to its shares as root too: root must stay root
		// there (no_root_squash), which only a root process can see.
		root := *spec.Containers[0].DeepCopy()
		zero, no := int64(0), false
		root.Name = "root"
		root.Args = []string{"check", "--root"}
		for _, sh := range t.shares {
			root.Args = append(root.Args, "--share", sh.Key+"="+mountOf[sh.Key])
		}
		root.SecurityContext.RunAsUser, root.SecurityContext.RunAsGroup, root.SecurityContext.RunAsNonRoot = &zero, &zero, &no
		root.SecurityContext.Capabilities = nil // root's file access, as pSeven's has it
		spec.InitContainers = []corev1.Container{root}
	}
	return spec, volumeKey
}

func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
