package installer

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/yaml"
)

// The guide's NodePorts, used when the values do not set entrypoint.*.
const (
	defaultWebNodePort   = 30080
	defaultAdminNodePort = 30001
)

// Endpoints are what the guide asks the admin to save after installing.
type Endpoints struct {
	SignInURL   string   `json:"signInURL"`
	AdminURL    string   `json:"adminURL"`
	HealthCheck string   `json:"healthCheck"`
	Nodes       []string `json:"workerNodes"`
	// Service is the release's NodePort Service the URLs go through.
	Service string `json:"service"`
	// healthPort is the Service port behind the health check NodePort.
	healthPort int32
}

// endpoints finds the entry point among the NodePort Services the release
// itself rendered, by the NodePorts its values ask for (entrypoint.webHttp
// and adminHttp): no Service or port name is assumed.
func (c *Cluster) endpoints(ctx context.Context, rel *release.Release, nodes []NodeInfo) (*Endpoints, error) {
	web, admin := entrypointPorts(rel)
	e := &Endpoints{}
	for _, n := range nodes {
		if n.Worker {
			e.Nodes = append(e.Nodes, n.Address)
		}
	}
	node := "<node address>"
	if len(e.Nodes) > 0 {
		node = e.Nodes[0]
	}
	for _, svc := range renderedServices(rel.Manifest) {
		// The live object has the NodePorts the cluster assigned.
		if live, err := c.Clientset.CoreV1().Services(rel.Namespace).Get(ctx, svc.Name, metav1.GetOptions{}); err == nil {
			svc = live
		} else if !apierrors.IsNotFound(err) {
			return nil, err
		}
		if svc.Spec.Type != corev1.ServiceTypeNodePort && svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, p := range svc.Spec.Ports {
			u := fmt.Sprintf("http://%s:%d/", node, p.NodePort)
			switch p.NodePort {
			case web:
				e.SignInURL, e.AdminURL, e.Service = u, u+"admin/", svc.Name
			case admin:
				e.HealthCheck, e.healthPort = u, p.Port
			}
		}
	}
	if e.SignInURL == "" {
		return e, fmt.Errorf("release %s has no NodePort Service on port %d (entrypoint.webHttp)", rel.Name, web)
	}
	return e, nil
}

// entrypointPorts reads entrypoint.webHttp/adminHttp from the release's
// values over its chart's defaults.
func entrypointPorts(rel *release.Release) (web, admin int32) {
	web, admin = defaultWebNodePort, defaultAdminNodePort
	vals, err := chartutil.CoalesceValues(rel.Chart, rel.Config)
	if err != nil {
		return web, admin
	}
	ep, _ := vals["entrypoint"].(map[string]interface{})
	if n, ok := number(ep["webHttp"]); ok {
		web = n
	}
	if n, ok := number(ep["adminHttp"]); ok {
		admin = n
	}
	return web, admin
}

func number(v interface{}) (int32, bool) {
	switch t := v.(type) {
	case float64:
		return int32(t), true
	case int64:
		return int32(t), true
	case int:
		return int32(t), true
	case string:
		n, err := strconv.Atoi(t)
		return int32(n), err == nil
	}
	return 0, false
}

func renderedServices(manifest string) []*corev1.Service {
	var out []*corev1.Service
	for _, doc := range manifestDocs(manifest) {
		var svc corev1.Service
		if err := yaml.Unmarshal([]byte(doc), &svc); err != nil || svc.Kind != "Service" {
			continue
		}
		out = append(out, &svc)
	}
	return out
}

// manifestDocs splits a rendered release manifest into its documents, in
// the order Helm wrote them.
func manifestDocs(manifest string) []string {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = docs[k]
	}
	return out
}

// probeHealth asks the health check port through the API server's
// service proxy: the egress guard lets p7bundle reach nothing else.
func (c *Cluster) probeHealth(ctx context.Context, namespace string, e *Endpoints, timeout time.Duration) error {
	if e.healthPort == 0 {
		return fmt.Errorf("no NodePort for the health check (entrypoint.adminHttp)")
	}
	var last error
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Clientset.CoreV1().Services(namespace).ProxyGet("http", e.Service, strconv.Itoa(int(e.healthPort)), "/", nil).DoRaw(ctx)
		if err == nil {
			return nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("health check %s (Service %s port %d): %v", e.HealthCheck, e.Service, e.healthPort, last)
		}
		time.Sleep(2 * time.Second)
	}
}

// failingPods lists the namespace's pods that are neither ready nor done,
// each with its reason and last event: the guide's `kubectl get all` look.
func (c *Cluster) failingPods(ctx context.Context, namespace string) []string {
	pods, err := c.Clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return []string{"listing pods: " + err.Error()}
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || podReady(&p) {
			continue
		}
		line := fmt.Sprintf("pod %s: %s", p.Name, podReason(&p))
		if evs := c.podEvents(ctx, namespace, p.Name); len(evs) > 0 {
			ev := evs[len(evs)-1]
			line += fmt.Sprintf("; last event: %s %s", ev.Reason, strings.TrimSpace(ev.Message))
		}
		out = append(out, line)
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podEvents are the events about a pod, oldest first (none if they cannot be read).
func (c *Cluster) podEvents(ctx context.Context, namespace, pod string) []corev1.Event {
	evs, err := c.Clientset.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String()})
	if err != nil {
		return nil
	}
	sortEvents(evs.Items)
	return evs.Items
}

func sortEvents(evs []corev1.Event) {
	sort.SliceStable(evs, func(i, j int) bool { return eventTime(evs[i]).Before(eventTime(evs[j])) })
}

func eventTime(e corev1.Event) time.Time {
	for _, t := range []time.Time{e.EventTime.Time, e.LastTimestamp.Time, e.FirstTimestamp.Time, e.CreationTimestamp.Time} {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}
