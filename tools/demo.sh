#!/usr/bin/env bash
# `deno task demo`: a dry run of the default conflist (deploy/cnichain.conflist) for a pod in a
# throwaway network namespace: every step's stdin, the kernel and disk changes it would make, and
# the result. Nothing is changed; the namespace is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ns="cnichain-demo-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
dist/cnichain add --dry-run deploy/cnichain.conflist \
  --netns "/var/run/netns/$ns" --container-id demo --ifname eth0 \
  --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
