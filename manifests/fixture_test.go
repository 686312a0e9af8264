package manifests

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/releaseutil"
)

// TestFixtureContract checks what the fixture chart promises beyond image
// discovery, so that it keeps running as real pods on the small test
// cluster: strictly valid Kubernetes objects of every workload kind, small
// requests, emptyDir only, the pull secret everywhere, the NodePorts.
func TestFixtureContract(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	files, err := renderChart(c, DiscoverOptions{}.withDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}

	kinds := map[string]int{}
	var podSpecs []struct {
		object string
		spec   corev1.PodSpec
		once   bool // Job or CronJob: runs to completion
	}
	var (
		hooks       []string
		edgerouter  *corev1.Service
		pullSecret  *corev1.Secret
		initFound   bool
		htcondorExe *appsv1.StatefulSet
	)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, file := range names {
		if !isManifestFile(file) {
			continue
		}
		for _, doc := range releaseutil.SplitManifests(files[file]) {
			var head struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name        string            `json:"name"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if head.Kind == "" {
				continue
			}
			kinds[head.Kind]++
			object := file + " " + head.Kind + "/" + head.Metadata.Name
			if _, ok := head.Metadata.Annotations["helm.sh/hook"]; ok {
				hooks = append(hooks, head.Kind+"/"+head.Metadata.Name+" "+head.Metadata.Annotations["helm.sh/hook"])
			}
			strict := func(into interface{}) {
				t.Helper()
				if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
					t.Errorf("%s: not a valid %s: %v", object, head.Kind, err)
				}
			}
			add := func(spec corev1.PodSpec, once bool) {
				podSpecs = append(podSpecs, struct {
					object string
					spec   corev1.PodSpec
					once   bool
				}{object, spec, once})
			}
			switch head.Kind {
			case "Deployment":
				var o appsv1.Deployment
				strict(&o)
				add(o.Spec.Template.Spec, false)
			case "StatefulSet":
				var o appsv1.StatefulSet
				strict(&o)
				if len(o.Spec.VolumeClaimTemplates) > 0 {
					t.Errorf("%s has volumeClaimTemplates", object)
				}
				if o.Spec.ServiceName == "" {
					t.Errorf("%s has no serviceName", object)
				}
				if o.Name == "pseven-rl-htcondorexecute" {
					htcondorExe = &o
				}
				add(o.Spec.Template.Spec, false)
			case "DaemonSet":
				var o appsv1.DaemonSet
				strict(&o)
				add(o.Spec.Template.Spec, false)
			case "Job":
				var o batchv1.Job
				strict(&o)
				add(o.Spec.Template.Spec, true)
			case "CronJob":
				var o batchv1.CronJob
				strict(&o)
				add(o.Spec.JobTemplate.Spec.Template.Spec, true)
			case "Pod":
				var o corev1.Pod
				strict(&o)
				add(o.Spec, false)
			case "Service":
				var o corev1.Service
				strict(&o)
				if o.Name == "pseven-rl-edgerouter" {
					edgerouter = &o
				}
			case "Secret":
				var o corev1.Secret
				strict(&o)
				pullSecret = &o
			default:
				t.Errorf("%s: unexpected kind", object)
			}
		}
	}

	for _, k := range []string{"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "Service", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s rendered", k)
		}
	}
	if want := []string{"Job/pseven-rl-post1-makeextnodepkgs post-install,post-upgrade"}; !reflect.DeepEqual(hooks, want) {
		t.Errorf("hooks = %q, want %q", hooks, want)
	}

	small := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}
	for _, p := range podSpecs {
		if len(p.spec.ImagePullSecrets) != 1 || p.spec.ImagePullSecrets[0].Name != "pseven-rl-registry" {
			t.Errorf("%s: imagePullSecrets = %v", p.object, p.spec.ImagePullSecrets)
		}
		for _, v := range p.spec.Volumes {
			if v.EmptyDir == nil {
				t.Errorf("%s: volume %s is not an emptyDir", p.object, v.Name)
			}
		}
		if p.once && p.spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy %q", p.object, p.spec.RestartPolicy)
		}
		if len(p.spec.InitContainers) > 0 {
			initFound = true
		}
		for _, ct := range append(append([]corev1.Container(nil), p.spec.InitContainers...), p.spec.Containers...) {
			if len(ct.Command) > 0 {
				t.Errorf("%s container %s overrides the command", p.object, ct.Name)
			}
			if (p.once || isInit(p.spec, ct.Name)) != reflect.DeepEqual(ct.Args, []string{"once"}) {
				t.Errorf("%s container %s: args %q", p.object, ct.Name, ct.Args)
			}
			if ct.Name == "htcondorexecute" {
				continue
			}
			if !equalResources(ct.Resources.Requests, small) {
				t.Errorf("%s container %s: requests %v, want cpu 10m memory 16Mi", p.object, ct.Name, ct.Resources.Requests)
			}
		}
	}
	if !initFound {
		t.Error("no initContainers rendered")
	}

	if htcondorExe == nil {
		t.Fatal("no htcondorexecute StatefulSet")
	}
	if r := htcondorExe.Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("htcondorexecute replicas = %v, want sizing.htcondorexecuteReplicas = 1", r)
	}
	if req := htcondorExe.Spec.Template.Spec.Containers[0].Resources.Requests; len(req) != 0 {
		t.Errorf("htcondorexecute requests = %v, want none (sizing values empty)", req)
	}

	if edgerouter == nil {
		t.Fatal("no edgerouter Service")
	}
	if edgerouter.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("edgerouter Service type %q, want NodePort", edgerouter.Spec.Type)
	}
	var nodePorts []int32
	for _, p := range edgerouter.Spec.Ports {
		nodePorts = append(nodePorts, p.NodePort)
	}
	if !reflect.DeepEqual(nodePorts, []int32{30080, 30001}) {
		t.Errorf("edgerouter nodePorts = %v, want [30080 30001]", nodePorts)
	}

	if pullSecret == nil || pullSecret.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("pull secret = %+v", pullSecret)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(pullSecret.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
		t.Fatalf("pull secret: %v", err)
	}
	if a, ok := cfg.Auths["registry.pseven.io"]; !ok || a.Auth != base64.StdEncoding.EncodeToString([]byte(":")) {
		t.Errorf("pull secret auths = %+v, want registry.pseven.io with empty credentials", cfg.Auths)
	}

	if notes := files["pseven/templates/NOTES.txt"]; !strings.Contains(notes, "pseven-notes-not-an-image") {
		t.Errorf("NOTES.txt not rendered as expected: %q", notes)
	}
}

func isInit(spec corev1.PodSpec, name string) bool {
	for _, c := range spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

func equalResources(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if got, ok := a[k]; !ok || got.Cmp(v) != 0 {
			return false
		}
	}
	return true
}
