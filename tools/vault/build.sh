#!/usr/bin/env bash
# Builds the Vault server internal/testing/testvault runs into
# $P7BUNDLE_TOOLS_BIN (default <repo>/.cache/tools/bin). The vault-<version>
# marker, written last, makes a rerun a no-op. The binary is built into a
# temporary file and renamed into place: an interrupted build never leaves a
# truncated binary that would be mistaken for a cached one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$(awk '$1 == "require" && $2 == "github.com/hashicorp/vault" { print $3 }' "$here/go.mod")
[ -n "$version" ] || { echo "no github.com/hashicorp/vault in $here/go.mod" >&2; exit 1; }
out=${P7BUNDLE_TOOLS_BIN:-$repo/.cache/tools/bin}
[ -e "$out/vault-$version" ] && [ -x "$out/vault" ] && exit 0

mkdir -p "$out"
tmp=$(mktemp "$out/vault.build.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cd "$here"
start=$SECONDS
# No build tags: "ui" would need the web UI assets, which the module lacks.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" github.com/hashicorp/vault
mv "$tmp" "$out/vault"
touch "$out/vault-$version"
echo "built vault $version in $((SECONDS - start))s"
