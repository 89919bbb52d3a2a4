#!/usr/bin/env bash
# The Prometheus alert rules (etc/prometheus/stella-signer-rules.yml): syntax check and the
# unit tests on synthetic series (etc/prometheus/stella-signer-rules.test.yml) with promtool,
# installed by scripts/setup-test-deps.sh (Debian package `prometheus`, service not started).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROMTOOL="${PROMTOOL:-/usr/bin/promtool}"
[ -x "$PROMTOOL" ] || { echo "promtool not found ($PROMTOOL): run scripts/setup-test-deps.sh" >&2; exit 1; }
cd "$ROOT/etc/prometheus"
"$PROMTOOL" check rules stella-signer-rules.yml
"$PROMTOOL" test rules stella-signer-rules.test.yml
# Every alert carries a runbook link to a section of docs/operations.md that exists.
missing=0
for anchor in $(grep -o 'docs/operations.md#[a-z0-9-]*' stella-signer-rules.yml | cut -d'#' -f2 | sort -u); do
  if ! grep -q "<a id=\"$anchor\"></a>" "$ROOT/docs/operations.md"; then
    echo "runbook anchor #$anchor is missing from docs/operations.md" >&2
    missing=1
  fi
done
alerts=$(grep -c '^      - alert:' stella-signer-rules.yml)
links=$(grep -c 'runbook_url: "docs/operations.md#' stella-signer-rules.yml)
if [ "$alerts" -ne "$links" ]; then
  echo "$alerts alerts but $links runbook links" >&2
  missing=1
fi
exit "$missing"
