package main

// usageTexts are each command's USAGE in --help: the required flags, then
// examples an admin would type.
var usageTexts = map[string]string{
	"build": `p7bundle build --chart CHART --key KEY [-o BUNDLE] [flags]

Examples:
  p7bundle build --chart pseven-2023.09.25.tgz --key cosign.key
  p7bundle build --chart pseven-2023.10.30.tgz --key cosign.key --base pseven-2023.09.25.tar.zst
  p7bundle build --chart pseven-2023.09.25.tgz --key hashivault://p7bundle --split-size 4G`,
	"verify": `p7bundle verify BUNDLE --key PUBLIC-KEY [flags]

Examples:
  p7bundle verify pseven-2023.09.25.tar.zst --key cosign.pub
  p7bundle verify pseven-2023.09.25.tar.zst.001 --key cosign.pub --json`,
	"approve": `p7bundle approve BUNDLE --key APPROVER-KEY --bundle-key PUBLIC-KEY [flags]

Examples:
  p7bundle approve pseven-2023.10.30.tar.zst --key security.key --bundle-key cosign.pub --site plant-a --note CAB-1234
  p7bundle approve pseven-2023.10.30.tar.zst --key hashivault://security --bundle-key cosign.pub --expires 7d`,
	"inspect": `p7bundle inspect BUNDLE [--json | --manifest | --cyclonedx]

Examples:
  p7bundle inspect pseven-2023.09.25.tar.zst
  p7bundle inspect pseven-2023.09.25.tar.zst --manifest > pseven-2023.09.25.json
  p7bundle inspect pseven-2023.09.25.tar.zst --cyclonedx > bom.json`,
	"diff": `p7bundle diff OLD NEW [--json]

Examples:
  p7bundle diff pseven-2023.09.25.tar.zst pseven-2023.10.30.tar.zst
  p7bundle diff pseven-2023.09.25.json pseven-2023.10.30.tar.zst --json`,
	"join": `p7bundle join BUNDLE.001 [-o BUNDLE] [--force]

Examples:
  p7bundle join pseven-2023.09.25.tar.zst.001
  p7bundle join pseven-2023.09.25.tar.zst.parts.json -o /data/pseven-2023.09.25.tar.zst`,
	"install": `p7bundle install BUNDLE --key PUBLIC-KEY --registry HOST[:PORT] [flags]

Examples:
  p7bundle install pseven-2023.09.25.tar.zst --key cosign.pub --registry registry.corp:5000 \
      --registry-username admin --registry-password-stdin -f site.yaml -n pseven-ns --create-namespace
  p7bundle install pseven-2023.10.30.tar.zst --key cosign.pub --registry registry.corp:5000 -n pseven-ns
  p7bundle install pseven-2023.10.30-delta.tar.zst --key cosign.pub --registry registry.corp:5000 --dry-run`,
	"doctor": `p7bundle doctor BUNDLE --key PUBLIC-KEY --registry HOST[:PORT] [flags]

Examples:
  p7bundle doctor pseven-2023.09.25.tar.zst --key cosign.pub --registry registry.corp:5000 -f site.yaml
  p7bundle doctor pseven-2023.09.25.tar.zst --key cosign.pub --registry registry.corp:5000 --json`,
	"push": `p7bundle push BUNDLE --key PUBLIC-KEY --registry HOST[:PORT] [flags]

Examples:
  p7bundle push pseven-2023.09.25.tar.zst --key cosign.pub --registry registry.corp:5000 --registry-password-stdin --registry-username admin
  p7bundle push pseven-2023.10.30-delta.tar.zst --key cosign.pub --registry harbor.corp --base pseven-2023.09.25.tar.zst
  p7bundle push pseven-2023.09.25.tar.zst --key cosign.pub --registry registry.corp --strict-egress --allow-endpoint minio.corp:9000`,
	"serve": `p7bundle serve BUNDLE... --key PUBLIC-KEY [flags]

Examples:
  p7bundle serve pseven-2023.09.25.tar.zst --key cosign.pub
  p7bundle serve pseven-2023.09.25.tar.zst pseven-2023.10.30.tar.zst --key cosign.pub --addr 0.0.0.0:5000 --tls-cert tls.crt --tls-key tls.key --htpasswd htpasswd
  crane ls 127.0.0.1:5000/pseven/pseven-app`,
	"export": `p7bundle export BUNDLE --key PUBLIC-KEY (--oci-layout DIR | --docker-archive -o FILE --image REF...) [flags]

Examples:
  p7bundle export pseven-2023.09.25.tar.zst --key cosign.pub --oci-layout pseven-layout
  p7bundle export pseven-2023.09.25.tar.zst --key cosign.pub --docker-archive -o app.tar --image pseven-app:6.47.4712
  p7bundle export pseven-2023.10.30.tar.zst --key cosign.pub --base pseven-2023.09.25.tar.zst --oci-layout pseven-layout`,
	"values": `p7bundle values BUNDLE --registry HOST[:PORT] [-f FILE]... [--set KEY=VALUE]... [-o FILE]

Examples:
  p7bundle values pseven-2023.09.25.tar.zst --registry registry.corp:5000 -f site.yaml
  p7bundle values pseven-2023.09.25.tar.zst --registry registry.corp:5000 --set 'smtp.host=mail.corp' -o values.yaml`,
	"lint": `p7bundle lint BUNDLE --registry HOST[:PORT] [-f FILE]... [--set KEY=VALUE]... [--json]

Examples:
  p7bundle lint pseven-2023.09.25.tar.zst --registry registry.corp:5000 -f values.airgap.yaml`,
	"restore-values": `p7bundle restore-values BACKUP [-o FILE]

Examples:
  p7bundle restore-values pseven-backup-pseven-rl-r3-20231030T101500Z.tar.zst -o values.r3.yaml`,
	"support": `p7bundle support [-n NAMESPACE] [--release NAME] [--bundle BUNDLE] [-o FILE]

Examples:
  p7bundle support -n pseven-ns --bundle pseven-2023.09.25.tar.zst`,
	"keygen": `p7bundle keygen [--output-prefix PREFIX]

Examples:
  COSIGN_PASSWORD=... p7bundle keygen --output-prefix cosign`,
	"public-key": `p7bundle public-key --key KEY [-o FILE]

Examples:
  p7bundle public-key --key cosign.key -o cosign.pub
  p7bundle public-key --key hashivault://p7bundle`,
	"version": `p7bundle version [--json]`,
	"completion": `p7bundle completion bash|zsh|fish|powershell

Examples:
  source <(p7bundle completion bash)`,
}
