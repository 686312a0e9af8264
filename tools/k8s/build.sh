#!/usr/bin/env bash
# Builds the Kubernetes binaries internal/testing/testsite runs into
# <repo>/.cache/k8s/<version>/bin, from the tools module given (default this
# one; tools/k8s-1.25 for the vendor-tested v1.25.2, tools/k8s-1.22
# for the oldest supported minor). The cache is keyed by the version, so a
# rerun with all binaries present is a no-op. Each binary is built into a
# temporary directory and renamed into place: an interrupted build never leaves
# a truncated binary that would be mistaken for a cached one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$(cd "${1:-$repo/tools/k8s}" && pwd)
version=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
[ -n "$version" ] || { echo "no k8s.io/kubernetes in $here/go.mod" >&2; exit 1; }
out=${K8S_BIN_DIR:-$repo/.cache/k8s/$version/bin}
cmds="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"

missing=""
for c in $cmds; do [ -x "$out/$c" ] || missing="$missing $c"; done
[ -z "$missing" ] && exit 0

# Without the version stamp /version reports v0.0.0 and Helm's kubeVersion
# checks fail. Before 1.26 or so the API server reads client-go's copy.
major=${version#v}; major=${major%%.*}
minor=${version#v$major.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

mkdir -p "$out"
tmp=$(mktemp -d "$out/../build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$here"

# Before 1.24 the module lacks pkg/generated/openapi/zz_generated.openapi.go:
# upstream generated it at build time (build/root/Makefile.generated_files).
# Do the same into a writable copy of the module and build against that copy.
go mod download k8s.io/kubernetes
moddir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
if [ ! -f "$moddir/pkg/generated/openapi/zz_generated.openapi.go" ]; then
	start=$SECONDS
	cp -r "$moddir" "$tmp/kubernetes"
	chmod -R u+w "$tmp/kubernetes"
	cp go.mod "$tmp/go.mod"
	cp go.sum "$tmp/go.sum"
	go mod edit -modfile="$tmp/go.mod" -replace "k8s.io/kubernetes=$tmp/kubernetes"
	export GOFLAGS="${GOFLAGS:-} -modfile=$tmp/go.mod"
	go build -o "$tmp/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen
	# The packages upstream fed it: every one tagged +k8s:openapi-gen= in
	# the tree and its staging modules, less code-generator's and the
	# samples'. kube-proxy's config is left out too: it is not in these
	# binaries' module graph and the API server does not serve it.
	staging=$(awk '$2 == "=>" && $1 ~ /^k8s.io\// && $4 ~ /^v0\./ { print $1 }' go.mod |
		grep -vE '/(code-generator|sample-.*|kube-proxy)$')
	go mod download $staging
	dirs=$(for m in k8s.io/kubernetes $staging; do
		d=$(go list -m -f '{{.Dir}}' "$m")
		(cd "$d" && grep -rl --include='*.go' '^// *+k8s:openapi-gen=' . | sed "s|^\.|$m|") || true
	done | grep -v '/[_.]' | xargs -n1 dirname | LC_ALL=C sort -u | paste -sd, -)
	# gengo of that age predates types.Alias.
	GODEBUG=gotypesalias=0 "$tmp/openapi-gen" -i "$dirs" \
		-p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
		-o "$tmp/gen" -h "$tmp/kubernetes/hack/boilerplate/boilerplate.generatego.txt" \
		-r "$tmp/api-violations.report" --logtostderr=false
	mv "$tmp/gen/k8s.io/kubernetes/pkg/generated/openapi/zz_generated.openapi.go" \
		"$tmp/kubernetes/pkg/generated/openapi/"
	echo "generated the OpenAPI code for $version in $((SECONDS - start))s"
fi

for c in $missing; do
	start=$SECONDS
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c"
	mv "$tmp/$c" "$out/$c"
	echo "built $c $version in $((SECONDS - start))s"
done
