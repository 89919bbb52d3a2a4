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
# Verify this bundle, then copy its images into a registry and print where the advisories are.
# Usage: scripts/load.sh REGISTRY[:PORT] --key TRUSTED.pub | --keyring DIR
# Images are copied with skopeo from the bundle's OCI layout (images/), one per reference.
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${1:?usage: $0 REGISTRY[:PORT] --key TRUSTED.pub | --keyring DIR}"
shift
[ "$#" -gt 0 ] || { echo "give --key TRUSTED.pub or --keyring DIR" >&2; exit 2; }
echo "==> verifying the bundle"
stella mirror verify "$BUNDLE/manifest.dsse" "$@"
command -v skopeo >/dev/null 2>&1 || { echo "skopeo is needed to push images" >&2; exit 2; }
echo "==> loading images into $REGISTRY"
stella mirror verify "$BUNDLE/manifest.dsse" "$@" --output json \
  | python3 -c 'import json,sys; [print(i["reference"]) for i in json.load(sys.stdin)["images"]]' \
  | while read -r ref; do
      target="$REGISTRY/${ref#*/}"
      echo "    $ref -> $target"
      skopeo copy --all "oci:$BUNDLE/images:$ref" "docker://$target"
    done
echo "==> advisories are in $BUNDLE/advisories/"
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

3. Load the images into your registry and import the advisories:

       ./{name}/scripts/load.sh registry.local:5000 --key trusted.pub

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
- freshness: the bundle is younger than its `validForSeconds` (24 h by default, ±5 s).

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
| `thin bundle ... base` | the update does not follow the bundle you hold | apply the missing updates in order |

Exit codes: 0 ok, 1 verification failed, 2 usage or input error, 4 not found.
"#
    .to_string()
}
