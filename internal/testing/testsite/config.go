package testsite

import (
	"bytes"
	"os"
	"path/filepath"
	"text/template"

	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// Configuration of the site's daemons. Each blocker of the reference recipe
// (shared/reference/single-node-kubernetes/README.md) is fixed here and noted
// where it happens.
var configs = template.Must(template.New("").Parse(`
{{define "containerd"}}version = 2
root = "{{.Dir}}/containerd/root"
state = "{{.Dir}}/containerd/state"

[grpc]
  address = "{{.Dir}}/containerd.sock"

[ttrpc]
  address = "{{.Dir}}/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.PauseImage}}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  # runc cannot write oom_score_adj here (no CAP_SYS_RESOURCE): sandboxes fail
  # with "can't get final child's PID from pipe: EOF" without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{.Dir}}/cni/net.d"
  # The site CA only (hosts.toml), NO credentials: containerd would use them
  # for every image of the registry, and pods without (or with wrong)
  # imagePullSecrets would pull all the same. The sandbox image is imported
  # (see importPause), never pulled.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{{.Dir}}/containerd/certs.d"
{{end}}

{{define "hosts.toml"}}server = "https://{{.Registry}}"

[host."https://{{.Registry}}"]
  capabilities = ["pull", "resolve"]
  ca = ["{{.RegistryCAFile}}"]
{{end}}

{{define "kubelet"}}apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
{{- if not .LegacyKubelet}}
# This kernel runs cgroup v1, which the kubelet refuses by default.
failCgroupV1: false
containerRuntimeEndpoint: unix://{{.Dir}}/containerd.sock
podLogsDir: {{.Dir}}/kubelet/pod-logs
{{- end}}
cgroupDriver: cgroupfs
failSwapOn: false
staticPodPath: ""
address: 0.0.0.0
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
clusterDNS: []
# The host's resolver is unreachable: lookups in pods would wait 5 s each.
resolvConf: {{.Dir}}/resolv.conf
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
serializeImagePulls: false
registerNode: true
# See restrict_oom_score_adj in the containerd config.
oomScoreAdj: 0
{{end}}

{{define "cni"}}{
  "cniVersion": "0.4.0",
  "name": "p7site",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "{{.Bridge}}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "{{.Dir}}/cni/ipam",
        "ranges": [[{"subnet": "{{.PodCIDR}}", "gateway": "{{.PodGateway}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
{{end}}
`))

// configData is what the templates see.
type configData struct {
	*Site
	PauseImage, Bridge, PodCIDR, PodGateway string
	LegacyKubelet                           bool
}

// writeConfigs renders the node's configuration files (full site only).
func (s *Site) writeConfigs() error {
	d := configData{Site: s, PauseImage: s.pauseImage(), Bridge: bridgeName, PodCIDR: podCIDR, PodGateway: podGateway, LegacyKubelet: s.legacyKubelet()}
	files := []struct{ tmpl, path string }{
		{"containerd", "containerd/config.toml"},
		{"hosts.toml", "containerd/certs.d/" + s.Registry + "/hosts.toml"},
		{"kubelet", "kubelet/config.yaml"},
		{"cni", "cni/net.d/10-p7site.conflist"},
	}
	for _, f := range files {
		var b bytes.Buffer
		if err := configs.ExecuteTemplate(&b, f.tmpl, d); err != nil {
			return err
		}
		p := filepath.Join(s.Dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			return err
		}
	}
	reg := testregistry.Config(s.path("registry"), s.Registry, s.path("pki/htpasswd"), s.path("pki/registry.crt"), s.path("pki/registry.key"))
	if s.RegistryToken != "" {
		reg = testregistry.Config(s.path("registry"), s.Registry, "", s.path("pki/registry.crt"), s.path("pki/registry.key")) +
			testregistry.TokenConfig("https://"+s.RegistryToken+"/token", s.path("pki/token-signing.crt"))
	}
	if err := os.WriteFile(s.path("registry.yml"), []byte(reg), 0o600); err != nil {
		return err
	}
	// Lookups from pods fail at once instead of timing out on the host's resolver.
	return os.WriteFile(filepath.Join(s.Dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
}
