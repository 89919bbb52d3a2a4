#!/usr/bin/env bash
# Registry benchmark (issue #4 item 7): loading a >= 1 GiB layout of several images that share
# layers into a local docker-registry with stella-oci vs `skopeo copy oci:... docker://...`,
# and pulling it back vs `skopeo copy docker://... oci:...` — same machine, same run, fresh
# registries (127.0.0.1 only) per round; prints each round and the ratios (skopeo / stella).
#
# Usage: scripts/oci-bench.sh            (1100 MiB, 2 rounds)
#        STELLA_OCI_BENCH_MIB=2048 STELLA_OCI_BENCH_ROUNDS=3 scripts/oci-bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in /usr/bin/docker-registry /usr/bin/skopeo; do
    [ -x "$tool" ] || { echo "$tool is missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
done
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM; $(/usr/bin/skopeo --version); $(/usr/bin/docker-registry --version)"
exec cargo bench -p stella-oci --bench registry
