#!/usr/bin/env bash
# Builds the Kubernetes binaries internal/testing/testsite runs into
# <repo>/.cache/k8s/<version>/bin, from the tools module given (default this
# one; tools/k8s-1.25 for the vendor-tested v1.25.2). The cache is keyed by the version, so a
# rerun with all binaries present is a no-op. Each binary is built into a
# temporary directory and renamed into place: an interrupted build never leaves
# a truncated binary that would be mistaken for a cached one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$(cd "${1:-$repo/tools/k8s}" && pwd)
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/go.mod")
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
for c in $missing; do
	start=$SECONDS
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c"
	mv "$tmp/$c" "$out/$c"
	echo "built $c $version in $((SECONDS - start))s"
done
