#!/usr/bin/env bash
# Make the Pulumi toolchain available with no download at run time:
#   pulumi                       (CLI, built from github.com/pulumi/pulumi/pkg/v3)
#   pulumi-language-python       (Python language host)
#   pulumi-language-python-exec  (the script the host runs, from the SDK module)
#   pulumi-resource-pulumi-python (the dynamic-provider plugin, from the SDK module)
# Binaries are cached outside the repository, keyed by version, and reused.
# Prints the bin directory on the last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=/dev/null
. "$here/toolchain/versions.env"

cache_root=${OMR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openstack-multiregion}
bin_dir="$cache_root/toolchain/pulumi-v$PULUMI_VERSION-python-host-v$LANGUAGE_HOST_VERSION/bin"
mkdir -p "$bin_dir"

log() { printf '[toolchain] %s\n' "$*" >&2; }

# A release binary on PATH with the right version is used as is.
use_installed_cli() {
  local found
  found=$(command -v pulumi 2>/dev/null) || return 1
  [ "$found" = "$bin_dir/pulumi" ] && return 1
  [ "$("$found" version 2>/dev/null)" = "v$PULUMI_VERSION" ] || return 1
  ln -sf "$found" "$bin_dir/pulumi"
  log "using installed $found (v$PULUMI_VERSION)"
}

go_build() { # <wrapper dir> <package> <output> <version stamp>
  local dir=$1 pkg=$2 out=$3 stamp=$4 start
  start=$(date +%s)
  log "building $(basename "$out") $stamp from Go modules (first run only; several minutes)..."
  ( cd "$here/toolchain/$dir" &&
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -tags osusergo,grpcnotrace \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$stamp" \
      -o "$out.tmp" "$pkg" ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && log "  ... still building $(basename "$out") ($(( $(date +%s) - start ))s)"
  done
  wait "$pid"
  mv "$out.tmp" "$out"
  log "built $(basename "$out") in $(( $(date +%s) - start ))s"
}

sdk_module_dir() {
  # Downloaded explicitly: with an installed CLI nothing else has fetched the module.
  ( cd "$here/toolchain/cli" && GOFLAGS=-mod=mod go mod download github.com/pulumi/pulumi/sdk/v3 &&
    GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3 )
}

command -v go >/dev/null || { log "Go is required to build the toolchain (none found on PATH)"; exit 1; }

if [ ! -x "$bin_dir/pulumi" ] && ! use_installed_cli; then
  go_build cli github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$bin_dir/pulumi" "v$PULUMI_VERSION"
fi
if [ ! -x "$bin_dir/pulumi-language-python" ]; then
  go_build langhost github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python \
    "$bin_dir/pulumi-language-python" "v$LANGUAGE_HOST_VERSION"
fi
# The scripts come from the SDK at the CLI's version, so the program runs with
# the executor that matches the Python SDK it imports.
if [ ! -x "$bin_dir/pulumi-language-python-exec" ] || [ ! -x "$bin_dir/pulumi-resource-pulumi-python" ]; then
  sdk=$(sdk_module_dir)
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin_dir/pulumi-language-python-exec"
  install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin_dir/pulumi-resource-pulumi-python"
  log "installed the Python executor and dynamic-provider plugin from the v$PULUMI_VERSION SDK module"
fi
log "pulumi $("$bin_dir/pulumi" version) ready in $bin_dir"
echo "$bin_dir"
