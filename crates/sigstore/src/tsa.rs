//! RFC 3161 timestamps of a bundle (`timestampVerificationData.rfc3161Timestamps`).
//!
//! Each `signedTimestamp` (a TimeStampResp, or a bare token) is unwrapped (status granted)
//! and its token checked by `stella_x509::tsp::check_token` (CMS signature, ESS binding, the
//! TSA certificate's profile and validity at `genTime`); its message imprint must be the hash
//! of the bundle's signature bytes; and a timestamp authority of the trusted root, valid at
//! `genTime`, must have issued the signing certificate (its chain verified link by link when
//! the root is read, each CA valid at `genTime`). A verified token makes `genTime` a verified signing time.

use stella_x509::tsp::{check_token, token_from_bytes};
use stella_x509::Cert;
use time::OffsetDateTime;

use crate::error::VerifyError;
use crate::trust::{Authority, AuthorityError, TrustedRoot};

/// Did this authority issue the TSA certificate, valid at `t`? The certificate is the
/// authority's own first certificate (pinned), or is signed by it; the authority's chain was
/// checked link by link when the root was read; every CA certificate of it must be a CA
/// valid at `t`.
fn authority_issued(a: &Authority, signer: &Cert, t: OffsetDateTime) -> Result<(), AuthorityError> {
    let first = a.chain.first().ok_or(AuthorityError::EmptyChain)?;
    let cas = if first.der() == signer.der() {
        &a.chain[1..]
    } else if signer.is_signed_by(first) {
        &a.chain[..]
    } else {
        return Err(AuthorityError::NotTsaIssuer {
            subject: signer.subject(),
        });
    };
    a.check_cas(cas, t)
}

/// A verified timestamp.
#[derive(Debug, Clone)]
pub struct VerifiedTimestamp {
    pub time: OffsetDateTime,
    pub authority: String,
}

/// Verify token `index` over `signature` against the trusted root's TSAs.
pub fn verify_timestamp(
    index: usize,
    token: &[u8],
    signature: &[u8],
    root: &TrustedRoot,
) -> Result<VerifiedTimestamp, VerifyError> {
    let extra: Vec<Cert> = root
        .timestamp_authorities
        .iter()
        .flat_map(|a| a.chain.iter().cloned())
        .collect();
    // `signedTimestamp` is a TimeStampResp (status + token); a bare token is accepted too.
    let token = token_from_bytes(token).map_err(|e| VerifyError::Timestamp {
        index,
        reason: e.to_string(),
    })?;
    let info = check_token(&token, &extra).map_err(|e| VerifyError::Timestamp {
        index,
        reason: e.to_string(),
    })?;
    if info.imprint != info.imprint_hash.digest(signature) {
        return Err(VerifyError::Timestamp {
            index,
            reason: "the message imprint is not the hash of the bundle's signature".into(),
        });
    }
    let t = info.gen_time;
    let mut reasons = Vec::new();
    for a in &root.timestamp_authorities {
        if !a.valid_for.contains(t) {
            reasons.push(format!("{} is not valid then", a.subject));
            continue;
        }
        match authority_issued(a, &info.signer, t) {
            Ok(()) => {
                return Ok(VerifiedTimestamp {
                    time: t,
                    authority: a.subject.clone(),
                })
            }
            Err(e) => reasons.push(format!("{}: {e}", a.subject)),
        }
    }
    if reasons.is_empty() {
        reasons.push("the trusted root has no timestamp authority".into());
    }
    Err(VerifyError::TimestampAuthority {
        index,
        time: stella_x509::format_time(t),
        reason: reasons.join("; "),
    })
}
