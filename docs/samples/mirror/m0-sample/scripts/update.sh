#!/usr/bin/env bash
# Apply a thin update bundle onto this bundle (in place, atomically), then verify the result.
# Usage: scripts/update.sh THIN_BUNDLE_DIR_OR_ARCHIVE --key TRUSTED.pub | --keyring DIR
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THIN="${1:?usage: $0 THIN_BUNDLE --key TRUSTED.pub | --keyring DIR}"
shift
stella mirror apply "$THIN" --onto "$BUNDLE" "$@"
