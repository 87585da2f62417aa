#!/usr/bin/env bash
# Builds policy.wasm reproducibly with Debian's Rust toolchain.
#
#   bash build.sh          build and copy to policy-wasm/policy.wasm
#   bash build.sh --check  build in a temporary directory and fail if the
#                          committed policy.wasm differs (CI runs this)
#
# Debian's rustc 1.63 with libstd-rust-dev-wasm32 is the toolchain (rustup
# cannot add the wasm32 target here), so both tools are named by absolute
# path: a rustup cargo or rustc earlier in PATH must not be picked up.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cargo="${CNICHAIN_CARGO:-/usr/bin/cargo}"
rustc="${CNICHAIN_RUSTC:-/usr/bin/rustc}"
target=wasm32-unknown-unknown

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: build.sh [--check]" >&2; exit 2 ;;
esac

for tool in "$cargo" "$rustc"; do
  if [[ ! -x "$tool" ]]; then
    echo "build.sh: $tool not found: apt-get install -y rustc cargo libstd-rust-dev-wasm32" >&2
    exit 1
  fi
done
if [[ ! -d "$("$rustc" --print sysroot)/lib/rustlib/$target" ]]; then
  echo "build.sh: $rustc has no $target standard library: apt-get install -y libstd-rust-dev-wasm32" >&2
  exit 1
fi

# Everything that could leak the machine into the output is pinned: a fresh
# target directory and CARGO_HOME, source paths remapped to fixed names, no
# incremental state, and no flags from the environment.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR RUSTC_WRAPPER
export CARGO_HOME="$work/cargo-home"
export CARGO_TARGET_DIR="$work/target"
export CARGO_INCREMENTAL=0
export RUSTC="$rustc"
export SOURCE_DATE_EPOCH=0
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=$here=/policy-wasm"$'\x1f'"--remap-path-prefix=$work=/build"$'\x1f'"--remap-path-prefix=${HOME:-/root}=/home"

(cd "$here" && "$cargo" build --quiet --locked --offline --release --lib --target "$target")
built="$CARGO_TARGET_DIR/$target/release/cnichain_policy.wasm"

if $check; then
  if ! cmp -s "$built" "$here/policy.wasm"; then
    echo "build.sh: policy-wasm/policy.wasm is stale: run bash policy-wasm/build.sh and commit the result" >&2
    echo "  committed $(sha256sum < "$here/policy.wasm" 2>/dev/null | cut -c1-64 || echo missing)" >&2
    echo "  rebuilt   $(sha256sum < "$built" | cut -c1-64)" >&2
    exit 1
  fi
  echo "policy.wasm is up to date ($(wc -c < "$built") bytes, sha256 $(sha256sum < "$built" | cut -c1-64))"
else
  install -m 0644 "$built" "$here/policy.wasm"
  echo "wrote policy-wasm/policy.wasm ($(wc -c < "$built") bytes, sha256 $(sha256sum < "$built" | cut -c1-64))"
fi
