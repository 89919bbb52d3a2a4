//! The generated `scripts/` and `docs/` of a bundle. Their text depends only on the bundle
//! name and version (no dates, no host names), so identical specs give identical files.

/// `(path, contents, media type)` of every generated file.
pub(crate) fn generated(name: &str, version: &str) -> Vec<(String, String, &'static str)> {
    let sh = "text/x-shellscript";
    let md = "text/markdown";
    vec![
        ("docs/INSTALL.md".into(), install_md(name, version), md),
        ("docs/TROUBLESHOOT.md".into(), troubleshoot_md(), md),
        ("docs/VERIFY.md".into(), verify_md(name, version), md),
        ("scripts/load.sh".into(), LOAD_SH.into(), sh),
        ("scripts/update.sh".into(), UPDATE_SH.into(), sh),
        ("scripts/verify.sh".into(), VERIFY_SH.into(), sh),
    ]
}

const VERIFY_SH: &str = r#"#!/usr/bin/env bash
# Verify this mirror bundle: signature, detached header, every file, freshness.
# Usage: scripts/verify.sh --key TRUSTED.pub | --keyring DIR   (never trust public-key.pem
# shipped inside the bundle: use the key you received out of band)
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$#" -gt 0 ] || { echo "usage: $0 --key TRUSTED.pub | --keyring DIR" >&2; exit 2; }
stella mirror verify "$BUNDLE/manifest.dsse" "$@"
"#;

const LOAD_SH: &str = r#"#!/usr/bin/env bash
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
"#;

const UPDATE_SH: &str = r#"#!/usr/bin/env bash
# Apply a thin update bundle onto this bundle (in place, atomically), then verify the result.
# Usage: scripts/update.sh THIN_BUNDLE_DIR_OR_ARCHIVE --key TRUSTED.pub | --keyring DIR
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THIN="${1:?usage: $0 THIN_BUNDLE --key TRUSTED.pub | --keyring DIR}"
shift
stella mirror apply "$THIN" --onto "$BUNDLE" "$@"
"#;

fn install_md(name: &str, version: &str) -> String {
    format!(
        r#"# Installing {name} {version}

1. Copy the archive to the air-gapped site, together with the trusted public key (or keyring)
   you received **out of band** — never trust the `public-key.pem` inside the bundle alone.
2. Unpack and verify in one step (nothing is written where you asked unless it verifies):

       stella mirror unpack {name}.tar.zst --output ./{name} --key trusted.pub

   or verify the archive without unpacking it:

       stella mirror verify {name}.tar.zst --key trusted.pub

3. Load the images into your registry (verifies the bundle again first; digests and tags are
   preserved; rerun to resume an interrupted load) and import the advisories:

       ./{name}/scripts/load.sh registry.local:5000 --key trusted.pub

   which runs `stella mirror load ./{name} --registry registry.local:5000 --key trusted.pub`.
   The archive can also be loaded directly, without unpacking it first:

       stella mirror load {name}.tar.zst --registry registry.local:5000 --key trusted.pub

4. Later updates may come as thin bundles; apply them in order:

       ./{name}/scripts/update.sh update.tar.zst --key trusted.pub
"#
    )
}

fn verify_md(name: &str, version: &str) -> String {
    format!(
        r#"# Verifying {name} {version}

`stella mirror verify manifest.dsse --key trusted.pub` (or `--keyring DIR`) checks:

- the DSSE signature over `manifest.json`, by keys trusted for purpose `mirror-bundle`
  (keyring keys that are revoked, expired or limited to other purposes do not count);
- the detached header `mirror/metadata/mirror.dsse.json` agrees with the signed payload
  (purpose, issuer, key id, payload digest, signatures);
- `SHA256SUMS`, `SHA256SUMS.dsse` and `SHA256SUMS.sig` match what the manifest signs;
- every file listed in the manifest is present with its size and SHA-256, and no other file is;
- freshness: the bundle is younger than its `validForSeconds` (24 h by default, ±5 s);
- `time-anchor.json`, if present: an RFC 3161 timestamp of the manifest. Give the time
  authority's root certificates with `--time-trust-roots roots.pem` to trust it: if this
  machine's clock is behind the stamped time, the stamped time is used for freshness.

Without `stella`, `sha256sum -c SHA256SUMS` checks the files (but not the signature).
`stella mirror verify-checksums .` does the same and also refuses unlisted files.
"#
    )
}

fn troubleshoot_md() -> String {
    r#"# Troubleshooting

| message | meaning | what to do |
|---|---|---|
| `bundle is stale` | older than its validity budget | get a newer bundle, or pass `--max-age SECONDS` if your policy allows |
| `not trusted for purpose mirror-bundle` | the signing key is in your keyring for other uses only | ask for a bundle signed by a mirror key |
| `the key is revoked` / `expired` | the keyring says so | do not use this bundle |
| `file ... changed` / `is missing` / `unlisted file` | the content differs from what was signed | fetch the bundle again; never edit a bundle |
| `manifest.json differs from the payload` | the manifest was edited after signing | fetch the bundle again |
| `no Rekor entry` (warning) | the bundle carries no transparency-log entry | expected on air-gapped sites |
| `time-anchor.json ... is not trusted` (warning) | the bundle has a time anchor but no `--time-trust-roots` was given | pass the TSA's root certificates to use it |
| `time anchor: ...` | the time anchor is invalid, for another manifest, or from an untrusted TSA | fetch the bundle again, or check `--time-trust-roots` |
| `thin bundle ... base` | the update does not follow the bundle you hold | apply the missing updates in order |
| `registry ... is unreachable ...; rerun to resume` | the registry went away during `load` | run the same `load` again: finished blobs are not sent again |
| `authentication failed` | the registry wants credentials | `docker login` (or `--registry-config FILE`) on the loading host |
| `unreachable` with a TLS error | a registry on another host that speaks only plain HTTP (HTTPS is used everywhere but 127.0.0.1/localhost) | give it TLS, or pass `--plain-http` on a network you trust |

Exit codes: 0 ok, 1 verification failed, 2 usage or input error, 3 registry authentication,
4 not found, 10 registry unavailable (rerun to resume).
"#
    .to_string()
}
