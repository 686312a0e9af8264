package installer

import (
	"context"
	"io"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/p7bundle/p7bundle/manifests"
)

// The report's URLs come from the release's own NodePort Services, by
// the NodePorts its values set: both fixtures name things differently.
func TestEndpointsFollowTheValuesNotTheNames(t *testing.T) {
	for _, tc := range []struct {
		chart, service string
		sets           map[string]interface{}
		web, health    string
		healthPort     int32
	}{
		{chart: "../testdata/charts/pseven", service: "pseven-rl-edgerouter", web: "http://10.0.0.2:30080/", health: "http://10.0.0.2:30001/", healthPort: 81},
		{chart: "../testdata/charts/pseven-alt", service: "pseven-rl-gateway", web: "http://10.0.0.2:31180/", health: "http://10.0.0.2:31101/", healthPort: 8081},
		{chart: "../testdata/charts/pseven-alt", service: "pseven-rl-gateway", web: "http://10.0.0.2:32080/", health: "http://10.0.0.2:32001/", healthPort: 8081,
			sets: map[string]interface{}{"entrypoint": map[string]interface{}{"webHttp": 32080, "adminHttp": 32001}}},
	} {
		c, err := manifests.LoadChart(tc.chart)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
			Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...interface{}) {}}
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.DryRun, in.ClientOnly = "pseven-rl", "pseven-ns", true, true
		rel, err := in.Run(c.Chart, tc.sets)
		if err != nil {
			t.Fatal(err)
		}
		// What the cluster holds: the rendered Services, NodePorts assigned.
		cs := fake.NewClientset()
		for _, svc := range renderedServices(rel.Manifest) {
			svc.Namespace = "pseven-ns"
			for i := range svc.Spec.Ports {
				if svc.Spec.Ports[i].NodePort == 0 {
					svc.Spec.Ports[i].NodePort = 30555
				}
			}
			if _, err := cs.CoreV1().Services("pseven-ns").Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		cluster := &Cluster{Clientset: cs}
		e, err := cluster.endpoints(context.Background(), rel, []NodeInfo{{Name: "n", Address: "10.0.0.2", Worker: true}})
		if err != nil {
			t.Fatalf("%s: %v", tc.chart, err)
		}
		if e.Service != tc.service || e.SignInURL != tc.web || e.AdminURL != tc.web+"admin/" || e.HealthCheck != tc.health || e.healthPort != tc.healthPort {
			t.Errorf("%s %v: endpoints %+v", tc.chart, tc.sets, e)
		}
	}
}

func TestFailingPodsNameTheReasonAndLastEvent(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ok", Namespace: "ns"}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "done", Namespace: "ns"}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stuck", Namespace: "ns"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "401 Unauthorized"}}}}}},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "ns", CreationTimestamp: metav1.Unix(100, 0)},
			InvolvedObject: corev1.ObjectReference{Name: "stuck"}, Reason: "Scheduled", Message: "assigned"},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e2", Namespace: "ns", CreationTimestamp: metav1.Unix(200, 0)},
			InvolvedObject: corev1.ObjectReference{Name: "stuck"}, Reason: "Failed", Message: "pull refused"},
	)
	got := (&Cluster{Clientset: cs}).failingPods(ctx, "ns")
	want := "pod stuck: ErrImagePull: 401 Unauthorized; last event: Failed pull refused"
	if len(got) != 1 || got[0] != want {
		t.Errorf("failingPods = %q, want [%q]", got, want)
	}
}
