package installer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/p7bundle/p7bundle/manifests"
)

var (
	// ErrPreflight: the cluster is not ready for the install; nothing changed.
	ErrPreflight = errors.New("preflight failed")
	// ErrSecrets: secrets could not be read, generated or kept safely.
	ErrSecrets = errors.New("secrets")
)

// Kubernetes versions the vendor guide supports.
const (
	minKube    = "1.22.0"
	testedKube = "1.25.2"
)

// Cluster is the site's Kubernetes API, reached only through the dialer given.
type Cluster struct {
	Flags     *genericclioptions.ConfigFlags
	Config    *rest.Config
	Clientset kubernetes.Interface
	// APIHost is host:port of the API server, for the egress guard.
	APIHost string
}

// apiEndpoint reads the API server address from the kubeconfig without
// connecting, so the egress guard can be built before any dial.
func apiEndpoint(kubeconfig, kubeContext string) (string, error) {
	flags := kubeFlags(kubeconfig, kubeContext, "", nil)
	// With no kubeconfig at all client-go falls back to localhost:8080,
	// which is never the site's API server.
	loader := flags.ToRawKubeConfigLoader()
	if raw, err := loader.RawConfig(); err == nil && len(raw.Clusters) == 0 && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return "", fmt.Errorf("%w: no kubeconfig found (tried %s): give --kubeconfig or set $KUBECONFIG", ErrPreflight,
			strings.Join(loader.ConfigAccess().GetLoadingPrecedence(), ", "))
	}
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return "", fmt.Errorf("%w: kubeconfig: %v", ErrPreflight, err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: kubeconfig: API server %q is not a URL", ErrPreflight, cfg.Host)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

func kubeFlags(kubeconfig, kubeContext, namespace string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(false)
	if kubeconfig != "" {
		f.KubeConfig = &kubeconfig
	}
	if kubeContext != "" {
		f.Context = &kubeContext
	}
	if namespace != "" {
		f.Namespace = &namespace
	}
	f.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
		if dial != nil {
			c.Dial = dial
		}
		c.QPS, c.Burst = 50, 100
		return c
	}
	return f
}

// connectCluster builds clients whose every connection goes through dial.
func connectCluster(kubeconfig, kubeContext, namespace, apiHost string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Cluster, error) {
	flags := kubeFlags(kubeconfig, kubeContext, namespace, dial)
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: kubeconfig: %v", ErrPreflight, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPreflight, err)
	}
	return &Cluster{Flags: flags, Config: cfg, Clientset: cs, APIHost: apiHost}, nil
}

// Preflight is what the cluster told us before anything changed.
type Preflight struct {
	ServerVersion string
	Warnings      []string
	Nodes         []NodeInfo
	Sizing        *manifests.Sizing
	NamespaceNew  bool
}

// NodeInfo is a node's name, internal address and capacity.
type NodeInfo struct {
	Name, Address string
	Worker        bool
	MemoryBytes   int64
	MilliCPU      int64
}

// Check verifies API version, namespace and nodes. It creates the
// namespace only when create is set, and only after the other checks pass.
func (c *Cluster) Check(ctx context.Context, namespace string, create bool) (*Preflight, error) {
	pf := &Preflight{}
	v, err := c.Clientset.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("%w: Kubernetes API %s: %v", ErrPreflight, c.Config.Host, err)
	}
	pf.ServerVersion = v.GitVersion
	server, err := version.ParseGeneric(v.GitVersion)
	if err != nil {
		return nil, fmt.Errorf("%w: Kubernetes API %s reports version %q: %v", ErrPreflight, c.Config.Host, v.GitVersion, err)
	}
	if server.LessThan(version.MustParseGeneric(minKube)) {
		return nil, fmt.Errorf("%w: Kubernetes %s is older than %s, the oldest pSeven Enterprise supports", ErrPreflight, v.GitVersion, minKube)
	}
	if server.GreaterThan(version.MustParseGeneric(testedKube)) {
		pf.Warnings = append(pf.Warnings, fmt.Sprintf("Kubernetes %s is newer than %s, the newest version the vendor tested", v.GitVersion, testedKube))
	}
	nodes, err := c.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: listing nodes: %v", ErrPreflight, err)
	}
	if len(nodes.Items) == 0 {
		return nil, fmt.Errorf("%w: the cluster has no nodes", ErrPreflight)
	}
	pf.Nodes, pf.Sizing = nodeSizing(nodes.Items)
	_, err = c.Clientset.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && !create:
		return nil, fmt.Errorf("%w: namespace %q does not exist (create it, or pass --create-namespace)", ErrPreflight, namespace)
	case apierrors.IsNotFound(err):
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
		if _, err := c.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("%w: creating namespace %q: %v", ErrPreflight, namespace, err)
		}
		pf.NamespaceNew = true
	case err != nil:
		return nil, fmt.Errorf("%w: namespace %q: %v", ErrPreflight, namespace, err)
	}
	return pf, nil
}

// nodeSizing applies the guide: one executor per worker node, each asking
// for half a worker's RAM and CPU (the smallest worker, so all fit).
func nodeSizing(nodes []corev1.Node) ([]NodeInfo, *manifests.Sizing) {
	var infos []NodeInfo
	workers := 0
	for _, n := range nodes {
		info := NodeInfo{Name: n.Name, Worker: !isControlPlane(n)}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && info.Address == "" {
				info.Address = a.Address
			}
		}
		if info.Address == "" {
			info.Address = n.Name
		}
		info.MemoryBytes = n.Status.Capacity.Memory().Value()
		info.MilliCPU = n.Status.Capacity.Cpu().MilliValue()
		if info.Worker {
			workers++
		}
		infos = append(infos, info)
	}
	// A cluster of control-plane nodes only (a test site, a tiny lab) runs the workers there.
	if workers == 0 {
		for i := range infos {
			infos[i].Worker = true
		}
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	s := &manifests.Sizing{}
	for _, n := range infos {
		if !n.Worker {
			continue
		}
		s.Workers++
		mi := n.MemoryBytes / 2 / (1 << 20)
		if s.MemoryMi == 0 || mi < s.MemoryMi {
			s.MemoryMi = mi
		}
		if m := n.MilliCPU / 2; s.CPUMilli == 0 || m < s.CPUMilli {
			s.CPUMilli = m
		}
	}
	return infos, s
}

func isControlPlane(n corev1.Node) bool {
	for _, l := range []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"} {
		if _, ok := n.Labels[l]; ok {
			return true
		}
	}
	for _, t := range n.Spec.Taints {
		if t.Key == "node-role.kubernetes.io/control-plane" && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

// secretgenJob runs the bundled secretgen image as a Job, with a pull
// secret for the site registry, and returns what it printed. Everything
// it creates is deleted again, also on failure.
func (c *Cluster) secretgenJob(ctx context.Context, namespace, image, registryHost, username, password string, timeout time.Duration) ([]byte, error) {
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	name := "p7bundle-secretgen-" + suffix
	core, batch := c.Clientset.CoreV1(), c.Clientset.BatchV1()
	pull := pullSecret(name+"-pull", namespace, registryHost, username, password, map[string]string{"app.kubernetes.io/managed-by": "p7bundle"})
	if _, err := core.Secrets(namespace).Create(ctx, pull, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("%w: creating pull secret for secretgen: %v", ErrSecrets, err)
	}
	background := metav1.DeletePropagationBackground
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		batch.Jobs(namespace).Delete(cleanup, name, metav1.DeleteOptions{PropagationPolicy: &background})
		core.Secrets(namespace).Delete(cleanup, pull.Name, metav1.DeleteOptions{})
	}()
	backoff, ttl := int32(0), int32(600)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "p7bundle"}},
		Spec: batchv1.JobSpec{
			BackoffLimit:            &backoff,
			TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"job-name": name}},
				Spec: corev1.PodSpec{
					RestartPolicy:    corev1.RestartPolicyNever,
					ImagePullSecrets: []corev1.LocalObjectReference{{Name: pull.Name}},
					Containers: []corev1.Container{{
						Name: "secretgen", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi"),
						}},
					}},
				},
			},
		},
	}
	if _, err := batch.Jobs(namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("%w: creating secretgen Job: %v", ErrSecrets, err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := core.Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + name})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		pod = &pods.Items[0]
		switch pod.Status.Phase {
		case corev1.PodSucceeded:
			return true, nil
		case corev1.PodFailed:
			return false, fmt.Errorf("secretgen pod %s failed: %s", pod.Name, podReason(pod))
		}
		return false, nil
	})
	if err != nil {
		reason := ""
		if pod != nil {
			reason = " (" + podReason(pod) + ")"
		}
		return nil, fmt.Errorf("%w: secretgen Job %s/%s with image %s: %v%s", ErrSecrets, namespace, name, image, err, reason)
	}
	logs, err := core.Pods(namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "secretgen"}).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading secretgen output: %v", ErrSecrets, err)
	}
	defer logs.Close()
	out, err := io.ReadAll(io.LimitReader(logs, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: reading secretgen output: %v", ErrSecrets, err)
	}
	return out, nil
}

// pullSecret is a dockerconfigjson Secret for one registry.
func pullSecret(name, namespace, registryHost, username, password string, labels map[string]string) *corev1.Secret {
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	dockercfg, _ := json.Marshal(map[string]any{"auths": map[string]any{registryHost: map[string]string{"auth": auth}}})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockercfg},
	}
}

func podReason(p *corev1.Pod) string {
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason + ": " + w.Message
		}
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("exit code %d: %s", t.ExitCode, t.Reason)
		}
	}
	return string(p.Status.Phase)
}
