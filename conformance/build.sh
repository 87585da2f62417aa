#!/usr/bin/env bash
# Builds what the conformance suite runs besides cnichain, under conformance/.build/ (gitignored):
#   libcni-client            upstream libcni v1.3.x as a runtime (./libcni-client, its go.mod/go.sum)
#   plugins-v1.9.1/          the newest reference plugins, from the Go module proxy
# Each is skipped when already built from the same inputs. Needs Go (PATH or /usr/local/go/bin)
# and the Go module proxy; module and build caches stay under .build/ too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/.build"
plugins_version=v1.9.1
plugins=(main/bridge main/ptp main/loopback ipam/host-local ipam/static meta/portmap)

go=$(command -v go || true)
[[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z $go ]]; then
  echo "conformance build: Go is needed (not in PATH nor /usr/local/go/bin)" >&2
  exit 1
fi
mkdir -p "$build"
export GOMODCACHE="$build/gomod" GOCACHE="$build/gocache" GOFLAGS=-modcacherw GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}" CGO_ENABLED=0

stamp_client=$(cat "$here/libcni-client/go.mod" "$here/libcni-client/go.sum" "$here"/libcni-client/*.go | sha256sum | cut -c1-16)
if [[ ! -x $build/libcni-client || $(cat "$build/libcni-client.stamp" 2>/dev/null) != "$stamp_client" ]]; then
  echo "conformance build: libcni-client" >&2
  (cd "$here/libcni-client" && "$go" build -mod=readonly -o "$build/libcni-client" .)
  echo "$stamp_client" >"$build/libcni-client.stamp"
fi

dir="$build/plugins-$plugins_version"
missing=0
for p in "${plugins[@]}"; do [[ -x $dir/$(basename "$p") ]] || missing=1; done
if ((missing)); then
  echo "conformance build: reference plugins $plugins_version" >&2
  pkgs=()
  for p in "${plugins[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@$plugins_version"); done
  GOBIN="$dir" "$go" install "${pkgs[@]}"
fi
echo "$dir"
