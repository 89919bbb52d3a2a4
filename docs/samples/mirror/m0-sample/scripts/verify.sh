#!/usr/bin/env bash
# Verify this mirror bundle: signature, detached header, every file, freshness.
# Usage: scripts/verify.sh --key TRUSTED.pub | --keyring DIR   (never trust public-key.pem
# shipped inside the bundle: use the key you received out of band)
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$#" -gt 0 ] || { echo "usage: $0 --key TRUSTED.pub | --keyring DIR" >&2; exit 2; }
stella mirror verify "$BUNDLE/manifest.dsse" "$@"
