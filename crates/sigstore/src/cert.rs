//! Fulcio signing certificates: path building to a CA of the trusted root at a verified time,
//! the code-signing profile, embedded SCTs, and the identity the certificate carries.
//!
//! **Path**: the leaf must be signed by the first certificate of a Fulcio CA's chain (trusted
//! root `certificateAuthorities`), each chain link by the next (checked once when the root is
//! read); every CA certificate must be a CA, valid at the signing time, and the authority's `validFor` must contain that time. The
//! leaf itself must be valid at the time. Certificates a bundle carries beyond the leaf are
//! never trusted; a bundle chain that contains a self-signed (root) certificate is refused.
//!
//! **Profile**: keyUsage digitalSignature, extendedKeyUsage id-kp-codeSigning.
//!
//! **SCTs** (RFC 6962 §3.2): the leaf's embedded SCT list (1.3.6.1.4.1.11129.2.4.2); each SCT
//! from a CT log of the trusted root (log id = SHA-256 of its key) whose key was valid at the
//! SCT time, signed over the precertificate entry rebuilt from the leaf: its
//! `tbsCertificate` without the SCT extension, after the SHA-256 of the issuer's
//! SubjectPublicKeyInfo. At least one must verify.
//!
//! **Identity**: SAN email and URI values; the OIDC issuer from 1.3.6.1.4.1.57264.1.8 (a DER
//! UTF8String), or the legacy 1.3.6.1.4.1.57264.1.1 (raw bytes); any other Fulcio extension
//! by OID (`FulcioCert::extension_value`).

use stella_x509::der::asn1::{OctetString, Utf8StringRef};
use stella_x509::der::{Decode, Encode};
use stella_x509::x509_cert::ext::pkix::name::GeneralName;
use stella_x509::x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};
use stella_x509::{oid, Cert, Oid};
use time::OffsetDateTime;

use crate::error::VerifyError;
use crate::key::VerifyingKey;
use crate::trust::{Authority, AuthorityError, TrustedRoot};

/// A parsed signing certificate.
#[derive(Debug, Clone)]
pub struct FulcioCert {
    pub cert: Cert,
}

fn time_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(stella_x509::format_time)
        .unwrap_or_else(|_| secs.to_string())
}

impl FulcioCert {
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        Cert::from_der(der)
            .map(|cert| FulcioCert { cert })
            .map_err(|e| VerifyError::UntrustedCertificate(format!("unreadable certificate: {e}")))
    }

    /// The certificate's public key.
    pub fn key(&self) -> Result<VerifyingKey, VerifyError> {
        VerifyingKey::from_spki(self.cert.public_key())
            .map_err(|e| VerifyError::Key(format!("the certificate's key: {e}")))
    }

    /// Is the leaf valid at `t`?
    pub fn check_valid_at(&self, t: OffsetDateTime) -> Result<(), VerifyError> {
        let (nb, na) = self.cert.validity_secs();
        let at = t.unix_timestamp();
        if at < nb || at > na {
            return Err(VerifyError::CertificateNotValidAt {
                time: stella_x509::format_time(t),
                not_before: time_text(nb),
                not_after: time_text(na),
            });
        }
        Ok(())
    }

    /// The Fulcio CA (and its chain) that issued this certificate, valid at `t`.
    pub fn path<'r>(
        &self,
        root: &'r TrustedRoot,
        t: OffsetDateTime,
    ) -> Result<&'r Authority, VerifyError> {
        let mut reasons = Vec::new();
        for ca in &root.certificate_authorities {
            match check_path(&self.cert, ca, t) {
                Ok(()) => return Ok(ca),
                Err(r) => reasons.push(format!("{} ({}): {r}", ca.subject, ca.uri)),
            }
        }
        if reasons.is_empty() {
            reasons.push("the trusted root has no certificate authority".into());
        }
        Err(VerifyError::UntrustedCertificate(reasons.join("; ")))
    }

    /// keyUsage digitalSignature and extendedKeyUsage codeSigning.
    pub fn check_profile(&self) -> Result<(), VerifyError> {
        let ku = self
            .cert
            .find_extension(oid::EXT_KEY_USAGE)
            .ok_or_else(|| VerifyError::KeyUsage("no keyUsage extension".into()))?;
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes())
            .map_err(|e| VerifyError::KeyUsage(format!("keyUsage: {e}")))?;
        if !ku.digital_signature() {
            return Err(VerifyError::KeyUsage(
                "keyUsage lacks digitalSignature".into(),
            ));
        }
        let eku = self
            .cert
            .find_extension(oid::EXT_EKU)
            .ok_or_else(|| VerifyError::KeyUsage("no extendedKeyUsage extension".into()))?;
        let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
            .map_err(|e| VerifyError::KeyUsage(format!("extendedKeyUsage: {e}")))?;
        if !eku.0.contains(&oid::KP_CODE_SIGNING) {
            return Err(VerifyError::KeyUsage(
                "extendedKeyUsage lacks id-kp-codeSigning".into(),
            ));
        }
        Ok(())
    }

    /// SAN email addresses and URIs, in certificate order.
    pub fn sans(&self) -> Vec<String> {
        let Some(ext) = self.cert.find_extension(oid::EXT_SAN) else {
            return Vec::new();
        };
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|g| match g {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The value of a Fulcio extension: a DER UTF8String for 1.3.6.1.4.1.57264.1.8 and
    /// later, raw UTF-8 bytes for the legacy 1.1–1.6.
    pub(crate) fn extension_value(&self, id: Oid) -> Option<String> {
        let ext = self.cert.find_extension(id)?;
        let raw = ext.extn_value.as_bytes();
        if oid::is_fulcio_legacy(id) {
            return String::from_utf8(raw.to_vec()).ok();
        }
        Utf8StringRef::from_der(raw).ok().map(|s| s.to_string())
    }

    /// The OIDC issuer (the v2 extension, else the legacy one).
    pub fn issuer(&self) -> Option<String> {
        self.extension_value(oid::FULCIO_ISSUER_V2)
            .or_else(|| self.extension_value(oid::FULCIO_ISSUER_V1))
    }

    /// Verify the embedded SCTs: at least one by a CT log of the trusted root.
    pub fn check_scts(&self, issuer: &Cert, root: &TrustedRoot) -> Result<usize, VerifyError> {
        let ext = self
            .cert
            .find_extension(oid::SCT_LIST)
            .ok_or_else(|| VerifyError::Sct("the certificate has no embedded SCT".into()))?;
        let list = OctetString::from_der(ext.extn_value.as_bytes())
            .map_err(|e| VerifyError::Sct(format!("SCT list: {e}")))?;
        let scts = parse_sct_list(list.as_bytes()).map_err(|e| VerifyError::Sct(e.to_string()))?;
        // The precertificate TBS: the leaf's tbsCertificate without the SCT extension.
        let mut tbs = self.cert.certificate().tbs_certificate.clone();
        if let Some(exts) = tbs.extensions.as_mut() {
            exts.retain(|e| e.extn_id != oid::SCT_LIST);
        }
        let tbs = tbs
            .to_der()
            .map_err(|e| VerifyError::Sct(format!("precertificate: {e}")))?;
        let issuer_spki = issuer
            .public_key()
            .to_der()
            .map_err(|e| VerifyError::Sct(format!("issuer key: {e}")))?;
        let issuer_key_hash = crate::HashAlgorithm::Sha256.digest(&issuer_spki);
        let mut verified = 0;
        let mut reasons = Vec::new();
        for sct in &scts {
            let Some(log) = root.ctlogs.iter().find(|l| l.log_id == sct.log_id) else {
                reasons.push(format!(
                    "SCT by unknown CT log {}",
                    crate::key::hex(&sct.log_id)
                ));
                continue;
            };
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(sct.timestamp_ms) * 1_000_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            if !log.valid_for.contains(t) {
                reasons.push(format!(
                    "the key of CT log {} is not valid at the SCT time",
                    log.base_url
                ));
                continue;
            }
            let mut signed = Vec::with_capacity(tbs.len() + 64);
            signed.push(0); // version v1
            signed.push(0); // signature_type certificate_timestamp
            signed.extend_from_slice(&sct.timestamp_ms.to_be_bytes());
            signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
            signed.extend_from_slice(&issuer_key_hash);
            let len = u32::try_from(tbs.len()).unwrap_or(u32::MAX).to_be_bytes();
            signed.extend_from_slice(&len[1..]);
            signed.extend_from_slice(&tbs);
            signed.extend_from_slice(
                &u16::try_from(sct.extensions.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            signed.extend_from_slice(&sct.extensions);
            if log.key.verify(&signed, &sct.signature) {
                verified += 1;
            } else {
                reasons.push(format!("the SCT by {} does not verify", log.base_url));
            }
        }
        if verified == 0 {
            return Err(VerifyError::Sct(if reasons.is_empty() {
                "the SCT list is empty".into()
            } else {
                reasons.join("; ")
            }));
        }
        Ok(verified)
    }
}

fn check_path(leaf: &Cert, ca: &Authority, t: OffsetDateTime) -> Result<(), AuthorityError> {
    if !ca.valid_for.contains(t) {
        return Err(AuthorityError::NotValidAt);
    }
    let first = ca.chain.first().ok_or(AuthorityError::EmptyChain)?;
    if !leaf.is_signed_by(first) {
        return Err(AuthorityError::NotIssuer);
    }
    ca.check_cas(&ca.chain, t)
}

struct Sct {
    log_id: Vec<u8>,
    timestamp_ms: u64,
    extensions: Vec<u8>,
    signature: Vec<u8>,
}

/// Why an embedded `SignedCertificateTimestampList` cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum SctListError {
    #[error("truncated SCT list")]
    Truncated,
    #[error("SCT list length mismatch")]
    LengthMismatch,
    #[error("SCT version {0}")]
    Version(u8),
    #[error("trailing bytes in an SCT")]
    TrailingBytes,
}

/// A TLS `SignedCertificateTimestampList`.
fn parse_sct_list(b: &[u8]) -> Result<Vec<Sct>, SctListError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], SctListError> {
        if b.len() < n {
            return Err(SctListError::Truncated);
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    fn u16_of(b: &mut &[u8]) -> Result<usize, SctListError> {
        let h = take(b, 2)?;
        Ok(usize::from(u16::from_be_bytes([h[0], h[1]])))
    }
    let mut b = b;
    let total = u16_of(&mut b)?;
    if total != b.len() {
        return Err(SctListError::LengthMismatch);
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16_of(&mut b)?;
        let mut s = take(&mut b, n)?;
        let version = take(&mut s, 1)?[0];
        if version != 0 {
            return Err(SctListError::Version(version));
        }
        let log_id = take(&mut s, 32)?.to_vec();
        let ts = take(&mut s, 8)?;
        let mut tsb = [0u8; 8];
        tsb.copy_from_slice(ts);
        let ext_len = u16_of(&mut s)?;
        let extensions = take(&mut s, ext_len)?.to_vec();
        let _hash_sig_alg = take(&mut s, 2)?;
        let sig_len = u16_of(&mut s)?;
        let signature = take(&mut s, sig_len)?.to_vec();
        if !s.is_empty() {
            return Err(SctListError::TrailingBytes);
        }
        out.push(Sct {
            log_id,
            timestamp_ms: u64::from_be_bytes(tsb),
            extensions,
            signature,
        });
    }
    Ok(out)
}
