#!/usr/bin/env bash
# Runs the README's examples as written: every ```sh block of README.md, in order, as one
# script from the root of a scratch copy of the repository in the state the quick start leaves
# it (its outputs in out/quickstart/, the binary in target/debug/), with a clean environment
# (no `stella` on PATH, no COSIGN_PASSWORD: the examples must set up what they use). A block
# preceded by `<!-- readme-examples: skip (reason) -->` is not run; the reason is printed. A
# block preceded by `<!-- readme-examples: registry -->` needs a registry: a throwaway
# docker-registry on a free 127.0.0.1 port is started for the run and given as $REGISTRY
# (without /usr/bin/docker-registry, as on a machine that never ran
# scripts/setup-test-deps.sh, those blocks are skipped and said so).
# Fails when a command fails, when no block was found, or when a process of the run is left.
# Usage: scripts/readme-examples.sh   (scripts/test.sh runs it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
README="$ROOT/README.md"
WORK="$(mktemp -d)"
# Anything still running from the scratch copy is ours: stop it by its id, then clean up.
leftovers() {
  local p
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$WORK/"; then
      echo "${p#/proc/}"
    elif [ "$(readlink "$p/cwd" 2>/dev/null)" = "$WORK/repo/out/quickstart" ]; then
      echo "${p#/proc/}"
    fi
  done
}
cleanup() {
  local pid
  for pid in $(leftovers); do
    [ "$pid" = "$$" ] || kill "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The scratch copy: the quick start's outputs, the build, and read-only links to what the
# examples read from the repository.
mkdir -p "$WORK/repo/target" "$WORK/home"
ln -s "$ROOT/docs" "$WORK/repo/docs"
ln -s "$ROOT/etc" "$WORK/repo/etc"
ln -s "$ROOT/crates" "$WORK/repo/crates"
echo "==> the quick start (OUT=$WORK/repo/out/quickstart)" >&2
OUT="$WORK/repo/out/quickstart" bash "$ROOT/scripts/quickstart.sh" >"$WORK/quickstart.log" 2>&1 || {
  cat "$WORK/quickstart.log" >&2
  echo "readme-examples: the quick start failed" >&2
  exit 1
}
BIN_DIR="$(cd "${CARGO_TARGET_DIR:-$ROOT/target}/debug" && pwd)"
ln -s "$BIN_DIR" "$WORK/repo/target/debug"

# A registry for the blocks that need one.
REGISTRY=""
if [ -x /usr/bin/docker-registry ]; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mkdir -p "$WORK/registry/storage"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$WORK/registry/storage" "$port" >"$WORK/registry/config.yml"
  /usr/bin/docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      REGISTRY="127.0.0.1:$port"
      break
    fi
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$REGISTRY" ]; then
    cat "$WORK/registry/log" >&2
    echo "readme-examples: docker-registry did not start" >&2
    exit 1
  fi
fi

# Extract the runnable blocks.
awk -v script="$WORK/examples.sh" -v skipped="$WORK/skipped" -v registry="$REGISTRY" '
  /<!-- readme-examples: skip/ { skip = $0; next }
  /<!-- readme-examples: registry -->/ {
    if (registry == "") skip = "skip (needs a registry: /usr/bin/docker-registry is not installed) -->"
    next }
  /^```sh$/ { inblock = 1; n++; start = NR
              if (skip != "") { sub(/.*skip */, "", skip); sub(/ *-->.*/, "", skip)
                                printf "  line %d: %s\n", NR, skip > skipped; mode = "skip" }
              else { mode = "run"; runs++
                     printf "printf \"\\n### README.md line %d\\n\" >&2\n", NR > script }
              skip = ""; next }
  /^```/ && inblock { inblock = 0; next }
  inblock && mode == "run" { print > script; next }
  !inblock && NF { skip = "" }
  END { print runs + 0 > (script ".count") }
' "$README"
RUNS="$(cat "$WORK/examples.sh.count")"
if [ "$RUNS" -eq 0 ]; then
  echo "readme-examples: no runnable \`\`\`sh block found in README.md" >&2
  exit 1
fi

echo "==> running $RUNS README example block(s) as written" >&2
(
  cd "$WORK/repo"
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" TMPDIR="${TMPDIR:-/tmp}" \
    LANG=C.UTF-8 ${REGISTRY:+REGISTRY="$REGISTRY"} bash -euo pipefail -x "$WORK/examples.sh"
) >"$WORK/examples.log" 2>&1 || {
  cat "$WORK/examples.log" >&2
  echo "readme-examples: a README example failed (log above)" >&2
  exit 1
}
if [ -n "${README_EXAMPLES_LOG:-}" ]; then cp "$WORK/examples.log" "$README_EXAMPLES_LOG"; fi
left="$(leftovers | grep -vx -e "$$" -e "${REGISTRY_PID:-0}" || true)"
if [ -n "$left" ]; then
  echo "readme-examples: the examples left processes running: $left" >&2
  exit 1
fi
if [ -s "$WORK/skipped" ]; then
  echo "readme-examples: blocks not run (marked in README.md):" >&2
  cat "$WORK/skipped" >&2
fi
echo "readme-examples: $RUNS block(s) ran as written" >&2
