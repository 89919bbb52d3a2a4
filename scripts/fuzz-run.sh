#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints, per target, the executions
# libFuzzer made and the crashes (crash/oom/timeout/leak artifacts) it found, as a Markdown
# table (the figures in fuzz/README.md come from this script).
#
#   scripts/fuzz-run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Not part of scripts/test.sh or CI's critical path (it takes minutes); run it after touching
# a parser and before releases. Needs a nightly toolchain (`cargo +nightly`, else
# RUSTC_BOOTSTRAP=1 on stable) and cargo-fuzz, which it installs when missing. Each target's
# corpus is fuzz/corpus/<target> (git-ignored, kept between runs), seeded from the committed
# seeds in fuzz/seeds/<target> and the test fixtures listed below; crashes land in
# fuzz/artifacts/<target>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-60}"
shift || true
ALL=(envelope bundle statement jcs keyfile archive jose oci mirror_manifest keyring)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    CARGO=(cargo +nightly)
else
    CARGO=(cargo)
    export RUSTC_BOOTSTRAP=1
fi

# Test vectors and fixtures that seed each target (besides fuzz/seeds/<target>).
seeds_for() {
    case "$1" in
        jcs) echo "$ROOT/crates/dsse/tests/data/jcs/input" ;;
        keyfile) echo "$ROOT/crates/keys/tests/data/cosign $ROOT/tools/cosign" ;;
        keyring) echo "$ROOT/crates/keys/tests/data/cosign" ;;
        sigstore_bundle) echo "$ROOT/crates/sigstore/tests/data/public-good $ROOT/crates/sigstore/tests/data/staging" ;;
        trusted_root) echo "$ROOT/crates/sigstore/roots" ;;
        tsa_response) echo "$ROOT/fuzz/seeds/rfc3161_token" ;;
        *) ;;
    esac
}

# Build where the caller's CARGO_TARGET_DIR says (a subfolder), else in fuzz/target.
TDIR=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then TDIR=(--target-dir "$CARGO_TARGET_DIR/fuzz"); fi

cd "$ROOT/fuzz"
echo "==> building ${#TARGETS[@]} targets (release, sanitizer)" >&2
for t in "${TARGETS[@]}"; do
    "${CARGO[@]}" fuzz build -O "${TDIR[@]}" "$t" >&2
done

LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT
echo "| target | seconds | executions | execs/s | corpus | crashes |"
echo "|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    dirs=("$corpus")
    if [ -d "seeds/$t" ]; then dirs+=("seeds/$t"); fi
    for d in $(seeds_for "$t"); do
        if [ -d "$d" ]; then dirs+=("$d"); fi
    done
    before="$(find "artifacts/$t" -type f | wc -l)"
    echo "==> fuzz $t for ${SECS}s (corpus: ${dirs[*]})" >&2
    "${CARGO[@]}" fuzz run -O "${TDIR[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        >"$LOGDIR/$t.log" 2>&1 || true
    after="$(find "artifacts/$t" -type f | wc -l)"
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$LOGDIR/$t.log" | awk '{print $2}' | tail -1 || true)"
    secs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$LOGDIR/$t.log" | awk '{print $5}' | tail -1 || true)"
    units="$(find "$corpus" -type f | wc -l)"
    rate="-"
    if [ -n "$execs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ]; then rate=$((execs / secs)); fi
    crashes=$((after - before))
    echo "| $t | ${secs:-?} | ${execs:-?} | $rate | $units | $crashes |"
    if [ "$crashes" -gt 0 ]; then
        echo "    crash in $t: $(find "artifacts/$t" -type f -newer "$LOGDIR" | head -3 | tr '\n' ' ')" >&2
        grep -m5 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$LOGDIR/$t.log" >&2 || true
    fi
done
