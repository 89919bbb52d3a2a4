//! Certificate issuers (Fulcio and the dev CA) and the checks every returned certificate
//! passes before its key signs anything ([`check_chain`]).
//!
//! An [`IssuedCertificate`] can only be made by [`check_chain`], so whatever implements
//! [`CertificateIssuer`] cannot hand the signing flow an unchecked certificate.

use stella_keys::PublicKey;
use stella_sigstore::cert::FulcioCert;
use stella_sigstore::TrustedRoot;
use stella_x509::der::Encode;
use stella_x509::Cert;
use time::OffsetDateTime;

use crate::error::{Service, UpstreamError};
use crate::token::IdentityToken;
use crate::UpstreamFuture;

/// What an issuer is asked for.
#[derive(Debug, Clone)]
pub struct CertificateRequest<'a> {
    /// The ephemeral key to certify.
    pub public_key: &'a PublicKey,
    /// The OIDC identity token.
    pub token: &'a IdentityToken,
    /// Proof of possession: the ephemeral key's signature (ECDSA P-256 SHA-256, DER) over
    /// [`IdentityToken::challenge`].
    pub proof_of_possession: &'a [u8],
}

/// A certificate that passed [`check_chain`].
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    leaf: FulcioCert,
    /// The leaf, then the trusted-root chain it was verified against (issuer first).
    chain: Vec<Cert>,
    san: String,
    oidc_issuer: String,
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    authority: String,
}

impl IssuedCertificate {
    pub fn leaf(&self) -> &Cert {
        &self.leaf.cert
    }
    pub(crate) fn fulcio(&self) -> &FulcioCert {
        &self.leaf
    }
    pub fn leaf_der(&self) -> &[u8] {
        self.leaf.cert.der()
    }
    /// Leaf first, then the CA chain of the trusted root (issuing CA first, root last).
    pub fn chain(&self) -> &[Cert] {
        &self.chain
    }
    /// The chain as PEM blocks (the API's `certificateChain`).
    pub fn chain_pem(&self) -> Vec<String> {
        self.chain
            .iter()
            .map(|c| {
                pem::encode_config(
                    &pem::Pem::new("CERTIFICATE", c.der().to_vec()),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect()
    }
    /// The SAN that matched the token.
    pub fn san(&self) -> &str {
        &self.san
    }
    /// The OIDC issuer extension (1.3.6.1.4.1.57264.1.8).
    pub fn oidc_issuer(&self) -> &str {
        &self.oidc_issuer
    }
    /// Serial number, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// The trusted-root CA that issued it (`O=…, CN=… (uri)`).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// Gets certificates for ephemeral keys.
pub trait CertificateIssuer: Send + Sync {
    /// Issue and check a certificate for `req` (see [`check_chain`]).
    fn issue<'a>(&'a self, req: CertificateRequest<'a>) -> UpstreamFuture<'a, IssuedCertificate>;

    /// The issuer's URL or name, for logs and audit.
    fn describe(&self) -> String;
}

/// How far in our future a new certificate's `notBefore` may be (the CA's clock ahead of ours).
pub(crate) const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(30);

fn ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Check a returned chain (leaf first; later certificates are not trusted, only the trusted
/// root is) before use:
/// - the leaf certifies exactly `req.public_key`;
/// - it is valid at `now`, has the code-signing profile, and is signed by a Fulcio CA of
///   `root` valid at `now` (the CA's chain checked as the verifier does);
/// - an embedded SCT by a CT log of `root` verifies;
/// - its OIDC issuer extension is the token's `iss`, and one SAN is one the token allows
///   (its email, its subject, or for GitHub Actions its workflow URL).
pub fn check_chain(
    service: Service,
    chain_der: &[Vec<u8>],
    req: &CertificateRequest<'_>,
    root: &TrustedRoot,
    now: OffsetDateTime,
) -> Result<IssuedCertificate, UpstreamError> {
    let bad = |m: String| UpstreamError::untrusted(service, m);
    let leaf_der = chain_der
        .first()
        .ok_or_else(|| bad("the response holds no certificate".into()))?;
    let leaf = FulcioCert::from_der(leaf_der).map_err(|e| bad(e.to_string()))?;
    let spki = leaf
        .cert
        .public_key()
        .to_der()
        .map_err(|e| bad(format!("the certificate's key: {e}")))?;
    if spki != req.public_key.spki_der() {
        return Err(bad(
            "the certificate is for another public key than the one we sent".into(),
        ));
    }
    // A CA whose clock runs a little ahead issues certificates that start in our future:
    // accepted up to MAX_CLOCK_SKEW (the signing flow then waits for notBefore, so the
    // timestamp falls inside the validity); expired is expired.
    let (nb, _) = leaf.cert.validity_secs();
    let skew = i64::try_from(MAX_CLOCK_SKEW.as_secs()).unwrap_or(0);
    let at = if nb > now.unix_timestamp() && nb - now.unix_timestamp() <= skew {
        ts(nb)
    } else {
        now
    };
    leaf.check_valid_at(at).map_err(|e| bad(e.to_string()))?;
    leaf.check_profile().map_err(|e| bad(e.to_string()))?;
    let ca = leaf.path(root, at).map_err(|e| bad(e.to_string()))?;
    let issuer_cert = ca
        .chain
        .first()
        .ok_or_else(|| bad("the trusted CA has no certificate".into()))?;
    leaf.check_scts(issuer_cert, root)
        .map_err(|e| bad(e.to_string()))?;
    let oidc_issuer = leaf
        .issuer()
        .ok_or_else(|| bad("the certificate has no OIDC issuer extension".into()))?;
    if oidc_issuer != req.token.issuer {
        return Err(bad(format!(
            "the certificate's OIDC issuer {oidc_issuer:?} is not the token's {:?}",
            req.token.issuer
        )));
    }
    let allowed = req.token.acceptable_sans();
    let sans = leaf.sans();
    let san = sans
        .iter()
        .find(|s| allowed.contains(s))
        .cloned()
        .ok_or_else(|| {
            bad(format!(
                "the certificate's SAN {sans:?} is not the token's identity {allowed:?}"
            ))
        })?;
    let (nb, na) = leaf.cert.validity_secs();
    let serial = stella_keys::hex(
        leaf.cert
            .certificate()
            .tbs_certificate
            .serial_number
            .as_bytes(),
    );
    let mut chain = vec![leaf.cert.clone()];
    chain.extend(ca.chain.iter().cloned());
    Ok(IssuedCertificate {
        authority: format!("{} ({})", ca.subject, ca.uri),
        leaf,
        chain,
        san,
        oidc_issuer,
        serial,
        not_before: ts(nb),
        not_after: ts(na),
    })
}
