//! Key references as users write them (`--key`, config files) and how each is loaded.
//!
//! | form | meaning |
//! |---|---|
//! | `PATH` | a key file: PEM PKCS#8, SEC1, cosign-encrypted private key, or PEM public key |
//! | `env://VAR` | the variable holds a key file, raw PEM or base64 of it (CI secrets) |
//! | `pkcs11:…` | RFC 7512 URI of an HSM key |
//! | `awskms://…` | a key in AWS KMS (or a compatible endpoint) |
//! | `keyless` | a short-lived certificate from the Fulcio-style CA |
//!
//! The well-known development key (`tools/cosign/cosign.dev.key`, public to everyone) is
//! recognised by its key id and refused unless the caller opted in with [`DevKeys::Allow`].

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::file::FileKey;
use crate::public::PublicKey;
use crate::signer::Signer;
use crate::KeyError;

/// Key id of the published development key (`tools/cosign/cosign.dev.key`,
/// password `stellaops-dev`). Anyone can sign with it, so it is never trusted by default.
pub(crate) const DEV_KEY_ID: &str =
    "sha256:3bd80e93d181bedd0e97a5191464b976910fe51da4d328199881ffad0d391de4";

/// Whether the published development key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevKeys {
    /// Refuse it (default).
    #[default]
    Refuse,
    /// Accept it, after the caller has warned the user.
    Allow,
}

/// A parsed key reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    Env(String),
    Pkcs11(String),
    AwsKms(String),
    Keyless,
}

impl KeyRef {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Reference("empty key reference".into()));
        }
        if let Some(var) = s.strip_prefix("env://") {
            if var.is_empty() {
                return Err(KeyError::Reference("`env://` needs a variable name".into()));
            }
            return Ok(KeyRef::Env(var.to_string()));
        }
        if s.starts_with("pkcs11:") {
            return Ok(KeyRef::Pkcs11(s.to_string()));
        }
        if s.starts_with("awskms://") {
            return Ok(KeyRef::AwsKms(s.to_string()));
        }
        if s == "keyless" {
            return Ok(KeyRef::Keyless);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(KeyError::Reference(format!(
                "unknown key reference scheme `{scheme}://` (use a file path, env://VAR, pkcs11:, awskms:// or keyless)"
            )));
        }
        Ok(KeyRef::File(PathBuf::from(s)))
    }

    /// The bytes of a file or env reference.
    fn read(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self {
            KeyRef::File(p) => std::fs::read(p)
                .map(Zeroizing::new)
                .map_err(|e| KeyError::Io(p.clone(), e)),
            KeyRef::Env(var) => {
                let value = Zeroizing::new(std::env::var(var).map_err(|_| {
                    KeyError::Reference(format!("environment variable {var} is not set"))
                })?);
                let trimmed = value.trim();
                if trimmed.starts_with("-----BEGIN") {
                    Ok(Zeroizing::new(trimmed.as_bytes().to_vec()))
                } else {
                    let compact: Zeroizing<String> =
                        Zeroizing::new(trimmed.chars().filter(|c| !c.is_whitespace()).collect());
                    stella_dsse::b64::decode(&compact)
                        .map(Zeroizing::new)
                        .map_err(|_| {
                            KeyError::Reference(format!(
                                "environment variable {var} holds neither a PEM key nor base64 of one"
                            ))
                        })
                }
            }
            KeyRef::Pkcs11(_) => Err(KeyError::BackendUnavailable("PKCS#11")),
            KeyRef::AwsKms(_) => Err(KeyError::BackendUnavailable("AWS KMS")),
            KeyRef::Keyless => Err(KeyError::BackendUnavailable("keyless")),
        }
    }

    /// A short, secret-free name for messages (`file:/path`, `env://VAR`, …).
    pub fn describe(&self) -> String {
        match self {
            KeyRef::File(p) => p.display().to_string(),
            KeyRef::Env(v) => format!("env://{v}"),
            KeyRef::Pkcs11(u) => u.split('?').next().unwrap_or(u).to_string(),
            KeyRef::AwsKms(u) => u.clone(),
            KeyRef::Keyless => "keyless".into(),
        }
    }
}

fn check_dev(key_id: &str, dev: DevKeys) -> Result<(), KeyError> {
    if key_id == DEV_KEY_ID && dev == DevKeys::Refuse {
        return Err(KeyError::DevKey);
    }
    Ok(())
}

/// Is this the published development key?
pub fn is_dev_key(key: &PublicKey) -> bool {
    key.key_id().as_str() == DEV_KEY_ID
}

/// Load a signer. `password` is called only for encrypted key files.
pub fn load_signer(
    r: &KeyRef,
    dev: DevKeys,
    password: &mut dyn FnMut() -> Result<Zeroizing<String>, KeyError>,
) -> Result<Box<dyn Signer>, KeyError> {
    #[cfg(feature = "pkcs11")]
    if let KeyRef::Pkcs11(uri) = r {
        let uri = crate::pkcs11::Pkcs11Uri::parse(uri)?;
        let key = crate::pkcs11::Pkcs11Key::open(&uri).map_err(|e| e.in_ref(r))?;
        return Ok(Box::new(key));
    }
    #[cfg(feature = "awskms")]
    if let KeyRef::AwsKms(uri) = r {
        let key = crate::awskms::KmsKey::open(uri).map_err(|e| e.in_ref(r))?;
        return Ok(Box::new(key));
    }
    let bytes = r.read()?;
    let key = FileKey::from_pem(&bytes, password).map_err(|e| e.in_ref(r))?;
    check_dev(key.key_id().as_str(), dev)?;
    Ok(Box::new(key))
}

/// Load a verification key: a PEM public key, or the public half of a private key file.
pub fn load_public(
    r: &KeyRef,
    dev: DevKeys,
    password: &mut dyn FnMut() -> Result<Zeroizing<String>, KeyError>,
) -> Result<PublicKey, KeyError> {
    #[cfg(feature = "pkcs11")]
    if let KeyRef::Pkcs11(uri) = r {
        let uri = crate::pkcs11::Pkcs11Uri::parse(uri)?;
        return crate::pkcs11::public_key(&uri).map_err(|e| e.in_ref(r));
    }
    #[cfg(feature = "awskms")]
    if let KeyRef::AwsKms(uri) = r {
        return crate::awskms::public_key(uri).map_err(|e| e.in_ref(r));
    }
    let bytes = r.read()?;
    let key = if contains_public_block(&bytes) {
        PublicKey::from_pem(&bytes).map_err(|e| e.in_ref(r))?
    } else {
        FileKey::from_pem(&bytes, password)
            .map_err(|e| e.in_ref(r))?
            .public_key()
            .clone()
    };
    check_dev(key.key_id().as_str(), dev)?;
    Ok(key)
}

fn contains_public_block(bytes: &[u8]) -> bool {
    bytes
        .windows(b"BEGIN PUBLIC KEY".len())
        .any(|w| w == b"BEGIN PUBLIC KEY")
}

/// Largest public-key file we read (a PEM public key is a few hundred bytes).
const MAX_PUBLIC_KEY_FILE: u64 = 64 * 1024;

/// Load a public key from a file path (convenience for keyrings). Only a regular file of at
/// most 64 KiB is read: a keyring naming `/dev/zero` or a FIFO fails instead of hanging.
pub fn load_public_file(path: &Path, dev: DevKeys) -> Result<PublicKey, KeyError> {
    use std::io::Read as _;
    let io = |e| KeyError::Io(path.to_path_buf(), e);
    let f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() || meta.len() > MAX_PUBLIC_KEY_FILE {
        return Err(KeyError::Malformed(format!(
            "{}: a public key file must be a regular file of at most {MAX_PUBLIC_KEY_FILE} bytes",
            path.display()
        )));
    }
    let mut text = Vec::new();
    f.take(MAX_PUBLIC_KEY_FILE + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    let key = PublicKey::from_pem(&text).map_err(|e| e.in_ref(&KeyRef::File(path.into())))?;
    check_dev(key.key_id().as_str(), dev)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(
            KeyRef::parse("a/b.key").unwrap(),
            KeyRef::File("a/b.key".into())
        );
        assert_eq!(KeyRef::parse("env://K").unwrap(), KeyRef::Env("K".into()));
        assert!(matches!(
            KeyRef::parse("pkcs11:token=x;object=y").unwrap(),
            KeyRef::Pkcs11(_)
        ));
        assert!(matches!(
            KeyRef::parse("awskms://h/alias/x").unwrap(),
            KeyRef::AwsKms(_)
        ));
        assert_eq!(KeyRef::parse("keyless").unwrap(), KeyRef::Keyless);
        assert!(KeyRef::parse("env://").is_err());
        assert!(KeyRef::parse("gcpkms://x").is_err());
        assert!(KeyRef::parse("").is_err());
        assert_eq!(
            KeyRef::parse("pkcs11:token=a?pin-value=1234")
                .unwrap()
                .describe(),
            "pkcs11:token=a"
        );
    }

    #[test]
    fn env_key_raw_and_base64() {
        let k = FileKey::generate(crate::Algorithm::EcdsaP256Sha256).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        std::env::set_var("STELLA_TEST_KEY_RAW", pem.as_str());
        std::env::set_var(
            "STELLA_TEST_KEY_B64",
            stella_dsse::b64::encode(pem.as_bytes()),
        );
        let mut nopw = || Err(KeyError::Password("none".into()));
        for var in ["STELLA_TEST_KEY_RAW", "STELLA_TEST_KEY_B64"] {
            let s = load_signer(&KeyRef::Env(var.into()), DevKeys::Refuse, &mut nopw).unwrap();
            assert_eq!(s.public_key(), k.public_key());
        }
        std::env::set_var("STELLA_TEST_KEY_BAD", "%%%");
        assert!(load_signer(
            &KeyRef::Env("STELLA_TEST_KEY_BAD".into()),
            DevKeys::Refuse,
            &mut nopw
        )
        .is_err());
        assert!(load_signer(
            &KeyRef::Env("STELLA_TEST_KEY_UNSET".into()),
            DevKeys::Refuse,
            &mut nopw
        )
        .is_err());
    }

    #[test]
    fn public_key_files_are_bounded() {
        let err = load_public_file(Path::new("/dev/zero"), DevKeys::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'a'; 100_000]).unwrap();
        let err = load_public_file(&big, DevKeys::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 65536 bytes"), "{err}");
    }
}
