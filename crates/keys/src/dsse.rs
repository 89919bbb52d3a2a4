//! DSSE signing and the verification policy.
//!
//! Verification counts **distinct trusted keys**, never signatures: a signature counts only
//! if it verifies over `PAE(payloadType, payload)` under a keyring key that is eligible
//! (not revoked, trusted for the purpose, inside its validity window). The `keyid` hint in the
//! envelope only orders the search; a wrong or missing hint changes nothing. When the
//! threshold is not met, the error says why each valid-but-ineligible signature did not count.

use stella_dsse::{pae, Bundle, Envelope, Signature, Statement, VerificationMaterial};
use time::OffsetDateTime;

use crate::keyring::{Ineligible, Keyring, Purpose};
use crate::public::KeyId;
use crate::signer::{SignError, Signer};

/// Sign `payload` as a DSSE envelope with every signer (one signature each).
pub fn sign_envelope(
    payload_type: &str,
    payload: Vec<u8>,
    signers: &[&dyn Signer],
) -> Result<Envelope, SignError> {
    if signers.is_empty() {
        return Err(SignError::NoSigner);
    }
    for (i, s) in signers.iter().enumerate() {
        if signers[..i].iter().any(|o| o.key_id() == s.key_id()) {
            return Err(SignError::DuplicateKey(s.key_id().clone()));
        }
    }
    let message = pae(payload_type, &payload);
    let signatures = signers
        .iter()
        .map(|s| {
            Ok(Signature {
                keyid: s.key_id().to_string(),
                sig: s.sign(&message)?,
            })
        })
        .collect::<Result<Vec<_>, SignError>>()?;
    Ok(Envelope {
        payload_type: payload_type.to_string(),
        payload,
        signatures,
    })
}

/// Canonicalise `statement` and sign it as an in-toto DSSE envelope.
pub fn attest(statement: &Statement, signers: &[&dyn Signer]) -> Result<Envelope, SignError> {
    let payload = statement
        .to_canonical_json()
        .map_err(|e| SignError::Statement(e.to_string()))?;
    sign_envelope(stella_dsse::PAYLOAD_TYPE_IN_TOTO, payload, signers)
}

/// Wrap a single-signature envelope in a v0.3 Sigstore bundle with a public-key hint.
pub fn to_bundle(envelope: Envelope, signer: &dyn Signer) -> Result<Bundle, SignError> {
    Bundle::new(
        envelope,
        VerificationMaterial::PublicKey {
            hint: signer.key_id().to_string(),
        },
    )
    .map_err(|e| SignError::Statement(e.to_string()))
}

/// What a verification requires.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Distinct trusted keys needed (≥ 1).
    pub threshold: usize,
    /// The purpose keys must be trusted for (`None`: any purpose).
    pub purpose: Option<Purpose>,
    /// The time at which keys must be valid (normally now).
    pub at: OffsetDateTime,
    /// The payload type the caller expects (`None`: any).
    pub payload_type: Option<String>,
}

impl Policy {
    pub fn new(threshold: usize) -> Self {
        Policy {
            threshold,
            purpose: None,
            at: OffsetDateTime::now_utc(),
            payload_type: None,
        }
    }

    pub fn purpose(mut self, p: Purpose) -> Self {
        self.purpose = Some(p);
        self
    }

    pub fn payload_type(mut self, t: &str) -> Self {
        self.payload_type = Some(t.to_string());
        self
    }

    pub fn at(mut self, t: OffsetDateTime) -> Self {
        self.at = t;
        self
    }
}

/// A key that counted towards the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The keyring id (for `--key` files, the key id).
    pub id: String,
    pub key_id: KeyId,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("threshold must be at least 1")]
    BadThreshold,
    #[error("threshold {threshold} is larger than the {keys} trusted key(s): it can never be met")]
    ThresholdAboveKeys { threshold: usize, keys: usize },
    #[error("payload type is {got:?}, expected {expected:?}")]
    PayloadType { expected: String, got: String },
    #[error("the envelope has no signatures")]
    NoSignatures,
    /// More signatures than a verifier checks: each costs a verification per trusted key (an
    /// Ed25519 one a pass over the whole payload), and anyone can append them to a signed
    /// envelope.
    #[error("the envelope has {count} signatures, more than the {max} a verifier checks")]
    TooManySignatures { count: usize, max: usize },
    #[error("signature by key {id:?} is not accepted: {why}")]
    Ineligible { id: String, why: Ineligible },
    #[error("no signature verifies with a trusted key (payload or payload type changed, or signed by another key)")]
    NoValidSignature,
    #[error("{valid} of the required {threshold} distinct trusted keys signed{detail}")]
    ThresholdNotMet {
        threshold: usize,
        valid: usize,
        detail: String,
    },
    /// The signed payload could not be read (streamed verification only).
    #[error("reading the signed payload: {0}")]
    Read(#[source] std::io::Error),
}

/// Verify `envelope` against `keyring` under `policy`; on success, the keys that counted.
pub fn verify_envelope(
    envelope: &Envelope,
    keyring: &Keyring,
    policy: &Policy,
) -> Result<Vec<VerifiedKey>, VerifyError> {
    let message = envelope.pae();
    verify_signatures(
        &envelope.payload_type,
        &envelope.signatures,
        keyring,
        policy,
        &mut |key, sig| Ok(key.verify(&message, sig)),
    )
}

/// [`verify_envelope`] for an envelope whose payload is not in memory: `pae` feeds
/// `PAE(payload_type, payload)` (e.g. [`crate::stream::Prefixed`] over the payload in a
/// file), re-read for each candidate key. Same rules, same errors, plus [`VerifyError::Read`].
pub fn verify_envelope_stream(
    payload_type: &str,
    signatures: &[Signature],
    pae: &mut dyn crate::stream::MessageSource,
    keyring: &Keyring,
    policy: &Policy,
) -> Result<Vec<VerifiedKey>, VerifyError> {
    let mut v = crate::stream::StreamVerifier::new(pae);
    verify_signatures(
        payload_type,
        signatures,
        keyring,
        policy,
        &mut |key, sig| v.verify(key, sig).map_err(VerifyError::Read),
    )
}

/// Most signatures an envelope may carry to be verified. A k-of-n multi-signature needs at
/// most n; the cap bounds the work a stranger can add to a signed envelope (signatures are not
/// signed), refused before any is checked.
pub const MAX_SIGNATURES: usize = 32;

type SigCheck<'a> = dyn FnMut(&crate::public::PublicKey, &[u8]) -> Result<bool, VerifyError> + 'a;

fn verify_signatures(
    payload_type: &str,
    signatures: &[Signature],
    keyring: &Keyring,
    policy: &Policy,
    verify: &mut SigCheck<'_>,
) -> Result<Vec<VerifiedKey>, VerifyError> {
    if policy.threshold == 0 {
        return Err(VerifyError::BadThreshold);
    }
    if policy.threshold > keyring.keys().len() {
        return Err(VerifyError::ThresholdAboveKeys {
            threshold: policy.threshold,
            keys: keyring.keys().len(),
        });
    }
    if let Some(expected) = &policy.payload_type {
        if payload_type != expected {
            return Err(VerifyError::PayloadType {
                expected: expected.clone(),
                got: payload_type.to_string(),
            });
        }
    }
    if signatures.is_empty() {
        return Err(VerifyError::NoSignatures);
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err(VerifyError::TooManySignatures {
            count: signatures.len(),
            max: MAX_SIGNATURES,
        });
    }
    let mut counted: Vec<usize> = Vec::new();
    let mut refused: Vec<(usize, Ineligible)> = Vec::new();
    for sig in signatures {
        // Hint first (a cheap ordering), then every other key. Keys already counted are
        // skipped: a second signature by the same key adds nothing.
        let hinted = keyring
            .keys()
            .iter()
            .position(|k| k.key.key_id().as_str() == sig.keyid);
        let order = hinted
            .into_iter()
            .chain((0..keyring.keys().len()).filter(|i| Some(*i) != hinted));
        for i in order {
            let tk = &keyring.keys()[i];
            // Distinct keys by canonical form (a keyring already refuses one key twice;
            // this keeps the count right even if that ever changed).
            if counted.iter().any(|j| keyring.keys()[*j].key == tk.key) {
                continue;
            }
            if !verify(&tk.key, &sig.sig)? {
                continue;
            }
            match tk.check(policy.purpose, policy.at) {
                Ok(()) => counted.push(i),
                Err(why) => {
                    if !refused.iter().any(|(j, _)| *j == i) {
                        refused.push((i, why));
                    }
                }
            }
            break;
        }
    }
    if counted.len() >= policy.threshold {
        return Ok(counted
            .into_iter()
            .map(|i| {
                let tk = &keyring.keys()[i];
                VerifiedKey {
                    id: tk.id.clone(),
                    key_id: tk.key.key_id().clone(),
                }
            })
            .collect());
    }
    if counted.is_empty() {
        if let Some((i, why)) = refused.first() {
            return Err(VerifyError::Ineligible {
                id: keyring.keys()[*i].id.clone(),
                why: why.clone(),
            });
        }
        if policy.threshold == 1 {
            return Err(VerifyError::NoValidSignature);
        }
    }
    let detail = refused
        .iter()
        .map(|(i, why)| format!("; key {:?} not counted: {why}", keyring.keys()[*i].id))
        .collect::<String>();
    Err(VerifyError::ThresholdNotMet {
        threshold: policy.threshold,
        valid: counted.len(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileKey;
    use crate::keyring::TrustedKey;
    use crate::public::Algorithm;

    fn keys(n: usize, alg: Algorithm) -> Vec<FileKey> {
        (0..n).map(|_| FileKey::generate(alg).unwrap()).collect()
    }

    fn ring(ks: &[FileKey]) -> Keyring {
        Keyring::new(
            ks.iter()
                .map(|k| TrustedKey::unrestricted(k.public_key().clone()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn streamed_verification_gives_the_same_verdicts() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let ks = keys(3, alg);
            let r = ring(&ks[..2]);
            let payload = vec![3u8; 70_000];
            let env = sign_envelope("t", payload.clone(), &[&ks[0], &ks[1], &ks[2]]).unwrap();
            let streamed = |env: &Envelope, payload: &[u8], threshold: usize| {
                let mut src = crate::stream::Prefixed {
                    prefix: stella_dsse::stream::pae_prefix(
                        &env.payload_type,
                        payload.len() as u64,
                    ),
                    body: std::io::Cursor::new(payload.to_vec()),
                };
                verify_envelope_stream(
                    &env.payload_type,
                    &env.signatures,
                    &mut src,
                    &r,
                    &Policy::new(threshold),
                )
            };
            for threshold in [1, 2, 3] {
                let a = verify_envelope(&env, &r, &Policy::new(threshold));
                let b = streamed(&env, &payload, threshold);
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{alg} {threshold}");
            }
            assert_eq!(streamed(&env, &payload, 2).unwrap().len(), 2);
            let mut changed = payload.clone();
            changed[69_999] ^= 1;
            let e = streamed(&env, &changed, 1).unwrap_err();
            assert!(matches!(e, VerifyError::NoValidSignature), "{e}");
        }
    }

    /// Signatures appended by a stranger (they are not signed) cost the verifier at most
    /// [`MAX_SIGNATURES`] checks per key: up to the cap a valid one among junk still counts;
    /// past it the envelope is refused before any signature is checked, streamed or not.
    #[test]
    fn signatures_past_the_cap_are_refused_unchecked() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let ks = keys(1, alg);
            let r = ring(&ks);
            let good = sign_envelope("t", b"p".to_vec(), &[&ks[0]]).unwrap();
            let junk = |n: usize| {
                let mut env = good.clone();
                let valid = env.signatures.remove(0);
                for i in 0..n - 1 {
                    let mut s = valid.clone();
                    let len = s.sig.len();
                    s.sig[i % len] ^= 1 + (i / len) as u8;
                    env.signatures.push(s);
                }
                // The valid one last: every junk signature is tried first.
                env.signatures.push(valid);
                env
            };
            let at_cap = junk(MAX_SIGNATURES);
            assert_eq!(
                verify_envelope(&at_cap, &r, &Policy::new(1)).unwrap().len(),
                1
            );
            let over = junk(MAX_SIGNATURES + 1);
            let err = verify_envelope(&over, &r, &Policy::new(1)).unwrap_err();
            assert!(
                matches!(err, VerifyError::TooManySignatures { count, max: MAX_SIGNATURES } if count == MAX_SIGNATURES + 1),
                "{err}"
            );
            // Streamed: refused without reading the payload once.
            struct Unread(usize);
            impl crate::stream::MessageSource for Unread {
                fn feed(&mut self, _: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
                    self.0 += 1;
                    Ok(())
                }
            }
            let mut src = Unread(0);
            let err = verify_envelope_stream("t", &over.signatures, &mut src, &r, &Policy::new(1))
                .unwrap_err();
            assert!(
                matches!(err, VerifyError::TooManySignatures { .. }),
                "{err}"
            );
            assert_eq!(src.0, 0, "{alg}");
        }
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let ks = keys(3, Algorithm::EcdsaP256Sha256);
        let r = ring(&ks);
        let env = sign_envelope("t", b"p".to_vec(), &[&ks[0], &ks[1]]).unwrap();
        assert_eq!(verify_envelope(&env, &r, &Policy::new(2)).unwrap().len(), 2);
        let err = verify_envelope(&env, &r, &Policy::new(3)).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::ThresholdNotMet {
                    threshold: 3,
                    valid: 2,
                    ..
                }
            ),
            "{err}"
        );

        // The same key signing twice counts once, whatever the keyid hints say.
        let mut twice = sign_envelope("t", b"p".to_vec(), &[&ks[0]]).unwrap();
        let again = sign_envelope("t", b"p".to_vec(), &[&ks[0]]).unwrap();
        let mut dup = again.signatures[0].clone();
        dup.keyid = ks[1].key_id().to_string();
        twice.signatures.push(dup);
        let err = verify_envelope(&twice, &r, &Policy::new(2)).unwrap_err();
        assert!(
            matches!(err, VerifyError::ThresholdNotMet { valid: 1, .. }),
            "{err}"
        );
        assert!(sign_envelope("t", vec![], &[&ks[0], &ks[0]]).is_err());
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let ks = keys(2, alg);
            let env = sign_envelope("application/x", b"payload".to_vec(), &[&ks[0]]).unwrap();
            let good = ring(&ks[..1]);
            let wrong = ring(&ks[1..]);
            assert!(verify_envelope(&env, &good, &Policy::new(1)).is_ok());
            assert!(matches!(
                verify_envelope(&env, &wrong, &Policy::new(1)),
                Err(VerifyError::NoValidSignature)
            ));
            let mut t = env.clone();
            t.payload[0] ^= 1;
            assert!(matches!(
                verify_envelope(&t, &good, &Policy::new(1)),
                Err(VerifyError::NoValidSignature)
            ));
            let mut t = env.clone();
            t.payload_type = "application/y".into();
            assert!(matches!(
                verify_envelope(&t, &good, &Policy::new(1)),
                Err(VerifyError::NoValidSignature)
            ));
            let mut t = env.clone();
            t.signatures[0].keyid = "sha256:nonsense".into();
            assert!(
                verify_envelope(&t, &good, &Policy::new(1)).is_ok(),
                "keyid is only a hint"
            );
            let mut t = env.clone();
            t.signatures.clear();
            assert!(matches!(
                verify_envelope(&t, &good, &Policy::new(1)),
                Err(VerifyError::NoSignatures)
            ));
            assert!(matches!(
                verify_envelope(&env, &good, &Policy::new(1).payload_type("other")),
                Err(VerifyError::PayloadType { .. })
            ));
            assert!(matches!(
                verify_envelope(&env, &good, &Policy::new(0)),
                Err(VerifyError::BadThreshold)
            ));
            assert!(matches!(
                verify_envelope(&env, &good, &Policy::new(2)),
                Err(VerifyError::ThresholdAboveKeys { .. })
            ));
        }
    }

    #[test]
    fn ineligible_keys_are_named() {
        let ks = keys(1, Algorithm::Ed25519);
        let mut tk = TrustedKey::unrestricted(ks[0].public_key().clone());
        tk.id = "k".into();
        tk.revoked = true;
        let r = Keyring::new(vec![tk.clone()]).unwrap();
        let env = sign_envelope("t", b"p".to_vec(), &[&ks[0]]).unwrap();
        let err = verify_envelope(&env, &r, &Policy::new(1)).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Ineligible {
                    why: Ineligible::Revoked,
                    ..
                }
            ),
            "{err}"
        );
        tk.revoked = false;
        tk.purposes = [Purpose::Attestation].into_iter().collect();
        let r = Keyring::new(vec![tk]).unwrap();
        let err =
            verify_envelope(&env, &r, &Policy::new(1).purpose(Purpose::MirrorBundle)).unwrap_err();
        assert!(err.to_string().contains("mirror-bundle"), "{err}");
    }
}
