#!/usr/bin/env bash
# Verify this bundle, then push its images into a registry (digests and tags preserved) and
# print where the advisories are. Needs only `stella`: no docker, no skopeo.
# Usage: scripts/load.sh REGISTRY[:PORT] --key TRUSTED.pub | --keyring DIR
#          [--prefix PATH] [--dry-run] [--plain-http] [--output json]
# An interrupted load resumes when run again: blobs already in the registry are not sent again.
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${1:?usage: $0 REGISTRY[:PORT] --key TRUSTED.pub | --keyring DIR [--prefix PATH] [--dry-run]}"
shift
[ "$#" -gt 0 ] || { echo "give --key TRUSTED.pub or --keyring DIR" >&2; exit 2; }
echo "==> verifying the bundle, then loading its images into $REGISTRY" >&2
stella mirror load "$BUNDLE" --registry "$REGISTRY" "$@"
echo "==> advisories are in $BUNDLE/advisories/" >&2
