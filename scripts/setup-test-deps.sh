#!/usr/bin/env bash
# Installs the third-party peers used by the interop tests (tests/interop/):
#   - openssl (Debian package)
#   - haproxy, psql, redis-cli (Debian packages; scale-out tests)
#   - a Python venv at $ROOT/.venv with tests/interop/requirements.txt
#   - tests/interop/node_modules from tests/interop/package-lock.json
# Idempotent: each part is skipped when a stamp (hash of its inputs) matches.
# Works on a fresh Debian 12 machine as root (network: Debian, PyPI, npm only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTEROP="$ROOT/tests/interop"
VENV="$ROOT/.venv"
REQS="$INTEROP/requirements.txt"
PY_STAMP="$VENV/.stella-deps-stamp"
NODE_MIN_MAJOR=20
NODE_MIN_MINOR=17

log() { echo "[setup-test-deps] $*" >&2; }
die() { echo "[setup-test-deps] ERROR: $*" >&2; exit 1; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- apt ------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and apt-get is not available to install it"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
        sudo="sudo"
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $sudo apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

# apt_install_no_start PKG...: apt_install, keeping the packages' services from starting
# (policy-rc.d, when we are root and none is there): their defaults listen on every interface,
# and the tests start their own on 127.0.0.1 or need none.
apt_install_no_start() {
    local policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt_install "$@"
    if [ "$policy_created" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
}

# openssl
if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl ca-certificates
fi
log "openssl: $(openssl version)"

# GNU time: the mirror tests measure the peak memory of `stella` on hostile archives.
if [ ! -x /usr/bin/time ]; then
    apt_install time
fi

# Scale-out tests (crates/signer/tests/it/scaleout.rs, crates/cli/tests/it/signer.rs): a real
# load balancer in front of the replicas, and the PostgreSQL/Redis command-line clients the
# tests use to create and drop their own database and key prefix.
if ! command -v haproxy >/dev/null 2>&1; then
    apt_install haproxy
fi
if ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql-client
fi
if ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-tools
fi
# Fault tests under load (crates/cli/tests/scaleout): private PostgreSQL (initdb/pg_ctl, run as
# the postgres user) and redis-server instances on free ports that the tests restart and pause,
# so the shared servers are never stopped.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
fi
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi
log "haproxy: $(haproxy -v 2>/dev/null | head -n1)"

# ------------------------------------------------------------- python ------
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        PYTHON="$(command -v python3)"
    elif [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        PYTHON=/usr/bin/python3
    else
        apt_install python3 python3-venv
        PYTHON=/usr/bin/python3
    fi
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || die "$PYTHON is older than Python 3.9"

py_want="$(hash_of "$REQS")"
if [ -x "$VENV/bin/python" ]; then
    py_want="$py_want $("$VENV/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo broken)"
fi
if [ -x "$VENV/bin/python" ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$py_want" ]; then
    log "python venv up to date ($VENV)"
else
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating venv $VENV with $PYTHON"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "pip install -r tests/interop/requirements.txt"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQS" >&2
    "$VENV/bin/python" -c 'import securesystemslib.dsse, securesystemslib.signer, in_toto_attestation.v1.statement, nacl.secret, cryptography' \
        || die "python peers failed to import after install"
    py_want="$(hash_of "$REQS") $("$VENV/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    echo "$py_want" > "$PY_STAMP"
    log "python venv ready"
fi

# --------------------------------------------------------------- node ------
node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
    node -e "const [a,b]=process.versions.node.split('.').map(Number);
             process.exit(a>${NODE_MIN_MAJOR}||(a===${NODE_MIN_MAJOR}&&b>=${NODE_MIN_MINOR})?0:1)"
}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node_ok || die "Node.js >= ${NODE_MIN_MAJOR}.${NODE_MIN_MINOR} and npm are required (found: $(node --version 2>/dev/null || echo none))"

# npm_ci_stamped DIR WHAT LABEL: `npm ci` in DIR from its package-lock.json, unless the stamp
# in DIR/node_modules says the same lockfile and Node version were installed already (without
# a lockfile yet: `npm install`, which writes one).
npm_ci_stamped() {
    local dir="$1" what="$2" label="$3"
    local stamp="$dir/node_modules/.stella-deps-stamp"
    local want
    if [ -f "$dir/package-lock.json" ]; then
        want="$(hash_of "$dir/package.json" "$dir/package-lock.json") $(node --version)"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
            log "$what node_modules up to date ($dir/node_modules)"
            return 0
        fi
        log "npm ci ($label)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    else
        log "npm install ($label, no lockfile yet: writing package-lock.json)"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
        want="$(hash_of "$dir/package.json" "$dir/package-lock.json") $(node --version)"
    fi
    mkdir -p "$dir/node_modules"
    echo "$want" > "$stamp"
    log "$what node_modules ready"
}
npm_ci_stamped "$INTEROP" "interop" "tests/interop"

log "done"

# ------------------------------------------------------------- mirror ------
# Mirror bundle tests and benchmark (crates/cli/tests/it/mirror.rs, scripts/mirror-bench.sh):
# zstd (`tar --zstd` reads our archives), pigz (the benchmark's gzip reference), GNU time.
mirror_missing=()
command -v zstd >/dev/null 2>&1 || mirror_missing+=(zstd)
command -v pigz >/dev/null 2>&1 || mirror_missing+=(pigz)
[ -x /usr/bin/time ] || mirror_missing+=(time)
if [ "${#mirror_missing[@]}" -gt 0 ]; then
    apt_install "${mirror_missing[@]}"
fi
log "mirror tools: $(zstd --version 2>&1 | head -n1); pigz $(pigz --version 2>&1 | awk '{print $2}')"

# ------------------------------------------------------------- signer ------
# Signer service tests (crates/signer/tests/it): the test Authority, oidc-provider 8.8.1 (the last line supporting Node 20) under
# Node (tests/authority/, from its package-lock.json).
npm_ci_stamped "$ROOT/tests/authority" "test Authority" "tests/authority: oidc-provider"

# ------------------------------------------------------------ keyless ------
# Keyless signing tests (crates/keyless/tests/it/mock.rs, CLI keyless tests): Fulcio, Rekor v1
# and a TSA from @sigstore/mock 0.12.1 (the newest that runs on Node 20), served on loopback by
# tests/sigstore-mock/serve.mjs (from its package-lock.json). Their bundles are also checked
# with @sigstore/verify from tests/interop/node_modules (above) and `openssl ts -verify`.
npm_ci_stamped "$ROOT/tests/sigstore-mock" "sigstore mock" "tests/sigstore-mock: @sigstore/mock"

# ---------------------------------------------------------------- oci ------
# Registry tests and benchmark (crates/oci/tests/it, crates/cli/tests/it/oci.rs,
# scripts/oci-bench.sh): Debian's docker-registry (distribution 2.8, started by the tests
# themselves on 127.0.0.1) and skopeo (the cross-check and the benchmark's reference).
oci_missing=()
[ -x /usr/bin/docker-registry ] || oci_missing+=(docker-registry)
[ -x /usr/bin/skopeo ] || oci_missing+=(skopeo)
if [ "${#oci_missing[@]}" -gt 0 ]; then
    # The package would start a system registry listening on every interface (:5000); the
    # tests start their own on 127.0.0.1.
    apt_install_no_start "${oci_missing[@]}"
fi
log "oci tools: $(/usr/bin/docker-registry --version 2>&1 | head -n1); $(/usr/bin/skopeo --version 2>&1 | head -n1)"

# ------------------------------------------------------------- pkcs11 ------
# PKCS#11 key tests (crates/keys/tests/pkcs11.rs, crates/cli/tests/it/pkcs11.rs): SoftHSM2.
# Each test initialises its own token in a temp dir through SOFTHSM2_CONF.
if [ ! -f /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    apt_install softhsm2
fi
log "pkcs11: $(softhsm2-util --version 2>&1 | head -n1) (/usr/lib/softhsm/libsofthsm2.so)"

# ---------------------------------------------------------------- kms ------
# AWS KMS tests (crates/keys/tests/awskms.rs, crates/cli/tests/it/awskms.rs): moto's KMS,
# patched in memory by tests/kms/moto_kms.py, in a venv of its own ($ROOT/.venv-kms).
KMS_VENV="$ROOT/.venv-kms"
KMS_REQS="$ROOT/tests/kms/requirements.txt"
KMS_STAMP="$KMS_VENV/.stella-deps-stamp"
kms_want="$(hash_of "$KMS_REQS") $("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
if [ -x "$KMS_VENV/bin/python" ] && [ -f "$KMS_STAMP" ] && [ "$(cat "$KMS_STAMP")" = "$kms_want" ]; then
    log "kms venv up to date ($KMS_VENV)"
else
    log "creating $KMS_VENV (moto)"
    rm -rf "$KMS_VENV"
    "$PYTHON" -m venv "$KMS_VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$KMS_VENV/bin/python" -m pip install -q --no-deps -r "$KMS_REQS" >&2
    "$KMS_VENV/bin/python" "$ROOT/tests/kms/moto_kms.py" selftest >&2 \
        || die "the patched moto KMS emulator failed its self-test"
    echo "$kms_want" > "$KMS_STAMP"
    log "kms venv ready"
fi

# ---------------------------------------------------------- prometheus -----
# Alert-rule tests (scripts/promtool-test.sh, called from scripts/test.sh): `promtool test
# rules` from Debian's prometheus package. The package would start a system Prometheus
# listening on :9090; the tests need only promtool, so keep the service from starting.
if [ ! -x /usr/bin/promtool ]; then
    apt_install_no_start prometheus
fi
log "promtool: $(/usr/bin/promtool --version 2>&1 | head -n1)"
