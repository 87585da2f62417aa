#!/usr/bin/env bash
# Installs the Debian packages cnichain's tests and demo use, when they are missing.
#   containernetworking-plugins  the reference plugins, for differential tests and the demo
#   util-linux                   flock(1), to test our locks against another process
#   time                         /usr/bin/time: the hostile-input suite's peak-memory bound
#   libnftables1                 what cnichain itself loads for nftables (through FFI)
#   iproute2 iputils-ping nftables   for tests to set up namespaces and observe (ip, ping, nft)
#   rustc cargo libstd-rust-dev-wasm32 lld-14   to rebuild policy-wasm/policy.wasm and check the
#                                committed one (lld-14 is the wasm32 linker, rust-lld; only recommended
#                                by libstd-rust-dev-wasm32, so --no-install-recommends would skip it)
# Deno itself comes from the npm registry (npx -y deno@2.9.6 ...), not from here.
set -euo pipefail
packages=(containernetworking-plugins util-linux time libnftables1 iproute2 iputils-ping nftables rustc cargo libstd-rust-dev-wasm32 lld-14)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "cnichain: these Debian packages are needed: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "cnichain: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
