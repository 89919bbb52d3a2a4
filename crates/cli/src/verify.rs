//! `stella verify` (envelopes and bundles) and `stella verify blob`.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use stella_dsse::{Bundle, Envelope, Statement, VerificationMaterial, PAYLOAD_TYPE_IN_TOTO};
use stella_keys::{DevKeys, KeyRef, Keyring, Policy, Purpose, TrustedKey};

use crate::exit::{fail, USAGE, VERIFY_FAILED};
use crate::io;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct VerifyArgs {
    #[command(subcommand)]
    blob: Option<VerifySub>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Output format: text or json (json prints the verified statement and signers).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Envelope or bundle to verify (`-` for stdin).
    file: Option<String>,
}

#[derive(Subcommand)]
enum VerifySub {
    /// Verify a raw signature over a blob (cosign verify-blob form).
    Blob(crate::blob::VerifyBlobArgs),
}

/// Trust roots: explicit keys or a keyring, and the purpose keys must hold.
#[derive(Args)]
pub(crate) struct TrustArgs {
    /// Trusted public key (PEM) or key reference; repeatable.
    #[arg(long, short = 'k', conflicts_with = "keyring")]
    pub(crate) key: Vec<String>,
    /// Keyring: a TOML file or a directory of keys (see docs/keys.md).
    #[arg(long)]
    pub(crate) keyring: Option<std::path::PathBuf>,
    /// Purpose the signing keys must be trusted for (keyring only): mirror-bundle, attestation, release.
    #[arg(long)]
    pub(crate) purpose: Option<String>,
}

impl TrustArgs {
    pub(crate) fn keyring(&self, dev: DevKeys) -> Result<Keyring> {
        if let Some(path) = &self.keyring {
            let ring = Keyring::load(path, dev)?;
            for k in ring.keys() {
                crate::warn_if_dev(&k.key);
            }
            return Ok(ring);
        }
        if self.key.is_empty() {
            return Err(fail(
                USAGE,
                "give the trusted key(s) with --key PUB or a --keyring",
            ));
        }
        let mut keys = Vec::new();
        for k in &self.key {
            let r = KeyRef::parse(k)?;
            let pk = stella_keys::load_public(&r, dev, &mut || io::password(false))
                .with_context(|| format!("loading trusted key {}", r.describe()))?;
            crate::warn_if_dev(&pk);
            keys.push(TrustedKey::unrestricted(pk));
        }
        Ok(Keyring::new(keys)?)
    }

    pub(crate) fn purpose(&self) -> Result<Option<Purpose>> {
        self.purpose
            .as_deref()
            .map(|p| Purpose::parse(p).map_err(|e| fail(USAGE, e.to_string())))
            .transpose()
    }
}

/// What a successful verification established.
pub(crate) struct Verified {
    pub(crate) envelope: Envelope,
    pub(crate) signers: Vec<stella_keys::VerifiedKey>,
    pub(crate) statement: Option<Statement>,
    pub(crate) bundle: bool,
}

/// Parse an envelope or bundle file and verify it.
pub(crate) fn verify_file(
    path: &str,
    trust: &TrustArgs,
    threshold: usize,
    dev: DevKeys,
) -> Result<Verified> {
    let bytes = io::read_limited(path, stella_dsse::envelope::MAX_ENVELOPE_BYTES as u64)?;
    let value = stella_dsse::jcs::parse_strict(&bytes).map_err(|e| {
        fail(
            VERIFY_FAILED,
            format!("{path} is not a valid envelope or bundle: {e}"),
        )
    })?;
    let (envelope, bundle) = if stella_dsse::bundle::looks_like_bundle(&value) {
        let b =
            Bundle::from_value(&value).map_err(|e| fail(VERIFY_FAILED, format!("{path}: {e}")))?;
        if let VerificationMaterial::Certificate { .. } = b.material {
            return Err(fail(
                USAGE,
                "this bundle is certificate-based (keyless); keyless verification needs the \
                 Fulcio and TSA trust roots, which this build does not support yet",
            ));
        }
        (b.envelope, true)
    } else {
        let e = Envelope::from_value(&value)
            .map_err(|e| fail(VERIFY_FAILED, format!("{path}: {e}")))?;
        (e, false)
    };
    let ring = trust.keyring(dev)?;
    let mut policy = Policy::new(threshold);
    policy.purpose = trust.purpose()?;
    let signers = stella_keys::verify_envelope(&envelope, &ring, &policy)?;
    let statement = if envelope.payload_type == PAYLOAD_TYPE_IN_TOTO {
        Some(Statement::from_json(&envelope.payload).map_err(|e| {
            fail(
                VERIFY_FAILED,
                format!(
                    "the signature is valid but the payload is not a valid in-toto statement: {e}"
                ),
            )
        })?)
    } else {
        None
    };
    Ok(Verified {
        envelope,
        signers,
        statement,
        bundle,
    })
}

pub(crate) fn run(a: VerifyArgs, dev: DevKeys) -> Result<()> {
    if let Some(VerifySub::Blob(b)) = a.blob {
        return crate::blob::verify_blob(b, dev);
    }
    let Some(file) = a.file.as_deref() else {
        return Err(fail(USAGE, "give the envelope or bundle file to verify"));
    };
    let v = verify_file(file, &a.trust, a.threshold, dev)?;
    if a.output == "json" {
        let statement = match &v.statement {
            Some(_) => serde_json::from_slice::<serde_json::Value>(&v.envelope.payload)?,
            None => serde_json::Value::Null,
        };
        let out = json!({
            "verified": true,
            "kind": if v.bundle { "sigstore-bundle" } else { "dsse-envelope" },
            "payloadType": v.envelope.payload_type,
            "threshold": a.threshold,
            "signers": v.signers.iter().map(|s| json!({"id": s.id, "keyid": s.key_id.as_str()})).collect::<Vec<_>>(),
            "statement": statement,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "Verified OK: {} of {} required trusted key(s) signed ({})",
            v.signers.len(),
            a.threshold,
            v.signers
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("payloadType: {}", v.envelope.payload_type);
        if let Some(st) = &v.statement {
            println!("predicateType: {}", st.predicate_type);
            for s in &st.subject {
                let digests = s
                    .digest
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                println!("subject: {} {}", s.name, digests);
            }
        }
    }
    Ok(())
}
