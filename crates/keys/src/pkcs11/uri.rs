//! RFC 7512 `pkcs11:` URIs: `pkcs11:token=T;object=O;id=%01%02?pin-source=F&module-path=P`.
//!
//! Path attributes (`;`-separated) select the token and the key; query attributes
//! (`&`-separated) carry the PIN and the module. Values are percent-decoded. An attribute may
//! appear only once; an unknown attribute is refused (a typo must not widen the selection),
//! except vendor attributes (`x-…`), which the RFC lets consumers ignore.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::KeyError;

/// Where the user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-value=` in the URI itself.
    Value(Zeroizing<String>),
    /// `pin-source=` naming a file (`file:/path` or a plain path) whose first line is the PIN.
    File(PathBuf),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Value(_) => f.write_str("Value(<redacted>)"),
            PinSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub(crate) token: Option<String>,
    /// `serial=`: the token serial number.
    pub(crate) serial: Option<String>,
    /// `manufacturer=`: the token manufacturer.
    pub(crate) manufacturer: Option<String>,
    /// `model=`: the token model.
    pub(crate) model: Option<String>,
    /// `slot-id=`: the slot number.
    pub(crate) slot_id: Option<u64>,
    /// `object=`: the key label (CKA_LABEL).
    pub(crate) object: Option<String>,
    /// `id=`: the key id (CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`: `private`, `public` (others are refused: we only use keys).
    pub(crate) object_type: Option<String>,
    /// `module-path=`: the PKCS#11 library to load.
    pub(crate) module_path: Option<PathBuf>,
    /// `module-name=`: a library name looked up in the usual directories.
    pub(crate) module_name: Option<String>,
    /// `pin-value=` / `pin-source=`.
    pub(crate) pin: Option<PinSource>,
}

fn pct_decode(raw: &str, what: &str) -> Result<Vec<u8>, KeyError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    KeyError::Reference(format!(
                        "pkcs11 URI: bad percent-encoding in the {what} attribute"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn pct_string(raw: &str, what: &str) -> Result<String, KeyError> {
    String::from_utf8(pct_decode(raw, what)?)
        .map_err(|_| KeyError::Reference(format!("pkcs11 URI: the {what} attribute is not UTF-8")))
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), KeyError> {
    if slot.is_some() {
        return Err(KeyError::Reference(format!(
            "pkcs11 URI: attribute {name} appears more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

impl Pkcs11Uri {
    /// Parse a `pkcs11:` URI.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| KeyError::Reference("a PKCS#11 URI starts with `pkcs11:`".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut u = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| {
                KeyError::Reference(format!("pkcs11 URI: path attribute {attr:?} has no `=`"))
            })?;
            match name {
                "token" => set(&mut u.token, pct_string(value, name)?, name)?,
                "serial" => set(&mut u.serial, pct_string(value, name)?, name)?,
                "manufacturer" => set(&mut u.manufacturer, pct_string(value, name)?, name)?,
                "model" => set(&mut u.model, pct_string(value, name)?, name)?,
                "object" => set(&mut u.object, pct_string(value, name)?, name)?,
                "id" => set(&mut u.id, pct_decode(value, name)?, name)?,
                "slot-id" => {
                    let n = pct_string(value, name)?.parse::<u64>().map_err(|_| {
                        KeyError::Reference("pkcs11 URI: slot-id must be a decimal number".into())
                    })?;
                    set(&mut u.slot_id, n, name)?
                }
                "type" => {
                    let t = pct_string(value, name)?;
                    if t != "private" && t != "public" {
                        return Err(KeyError::Reference(format!(
                            "pkcs11 URI: type={t} is not a key type Stella uses (private or public)"
                        )));
                    }
                    set(&mut u.object_type, t, name)?
                }
                // Accepted and not needed to find a key.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                n if n.starts_with("x-") => {}
                other => {
                    return Err(KeyError::Reference(format!(
                        "pkcs11 URI: unknown path attribute {other:?}"
                    )))
                }
            }
        }
        if let Some(q) = query {
            for attr in q.split('&').filter(|a| !a.is_empty()) {
                let (name, value) = attr.split_once('=').ok_or_else(|| {
                    KeyError::Reference("pkcs11 URI: a query attribute has no `=`".into())
                })?;
                match name {
                    "pin-value" => set(
                        &mut u.pin,
                        PinSource::Value(Zeroizing::new(pct_string(value, name)?)),
                        "pin-value/pin-source",
                    )?,
                    "pin-source" => {
                        let v = pct_string(value, name)?;
                        let path = v
                            .strip_prefix("file://")
                            .or_else(|| v.strip_prefix("file:"))
                            .unwrap_or(&v);
                        if path.is_empty() {
                            return Err(KeyError::Reference(
                                "pkcs11 URI: pin-source names no file".into(),
                            ));
                        }
                        set(
                            &mut u.pin,
                            PinSource::File(PathBuf::from(path)),
                            "pin-value/pin-source",
                        )?
                    }
                    "module-path" => {
                        set(&mut u.module_path, pct_string(value, name)?.into(), name)?
                    }
                    "module-name" => set(&mut u.module_name, pct_string(value, name)?, name)?,
                    n if n.starts_with("x-") => {}
                    other => {
                        return Err(KeyError::Reference(format!(
                            "pkcs11 URI: unknown query attribute {other:?}"
                        )))
                    }
                }
            }
        }
        Ok(u)
    }

    /// The URI without its query (no PIN), for messages and audit records.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(n) = self.slot_id {
            parts.push(format!("slot-id={n}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            let enc: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            parts.push(format!("id={enc}"));
        }
        format!("pkcs11:{}", parts.join(";"))
    }

    /// The user PIN: the URI's, else `STELLA_PKCS11_PIN`, else none.
    pub(crate) fn read_pin(&self) -> Result<Option<Zeroizing<String>>, KeyError> {
        match &self.pin {
            Some(PinSource::Value(v)) => Ok(Some(v.clone())),
            Some(PinSource::File(p)) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(p).map_err(|e| KeyError::Io(p.clone(), e))?,
                );
                let line = text.lines().next().unwrap_or("");
                Ok(Some(Zeroizing::new(line.to_string())))
            }
            None => Ok(std::env::var("STELLA_PKCS11_PIN").ok().map(Zeroizing::new)),
        }
    }

    /// The module to load: `module-path`, else `STELLA_PKCS11_MODULE`, else `module-name`
    /// looked up in the usual library directories.
    pub(crate) fn module(&self) -> Result<PathBuf, KeyError> {
        if let Some(p) = &self.module_path {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("STELLA_PKCS11_MODULE") {
            return Ok(PathBuf::from(p));
        }
        if let Some(name) = &self.module_name {
            if name.contains('/') {
                return Err(KeyError::Reference(
                    "pkcs11 URI: module-name is a name, not a path (use module-path)".into(),
                ));
            }
            let file = format!("lib{name}.so");
            let dirs = [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/usr/lib/softhsm",
                "/usr/lib/x86_64-linux-gnu/pkcs11",
                "/usr/lib/aarch64-linux-gnu/pkcs11",
                "/usr/lib/pkcs11",
                "/usr/lib64/pkcs11",
                "/usr/local/lib",
                "/usr/lib",
            ];
            for d in dirs {
                for f in [format!("{d}/{file}"), format!("{d}/{name}.so")] {
                    let p = PathBuf::from(f);
                    if p.is_file() {
                        return Ok(p);
                    }
                }
            }
            return Err(KeyError::NotFound(format!(
                "PKCS#11 module {name:?} (lib{name}.so) is not installed in the usual directories; use module-path"
            )));
        }
        Err(KeyError::Reference(
            "no PKCS#11 module: add module-path=/path/to/lib.so to the URI or set STELLA_PKCS11_MODULE".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_examples() {
        // RFC 7512 §3.3 examples (the ones that name keys).
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=public;id=%69%95%3E%5C%F4%BD%EC%91",
        ).unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.object.as_deref(), Some("my-certificate"));
        assert_eq!(
            u.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        let u = Pkcs11Uri::parse(
            "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11&pin-source=file:/etc/token_pin",
        )
        .unwrap();
        assert_eq!(u.object.as_deref(), Some("my-sign-key"));
        assert_eq!(u.module_name.as_deref(), Some("mypkcs11"));
        assert_eq!(u.pin, Some(PinSource::File("/etc/token_pin".into())));
        let u = Pkcs11Uri::parse(
            "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
        )
        .unwrap();
        assert_eq!(
            u.pin,
            Some(PinSource::Value(Zeroizing::new("the-pin".into())))
        );
        // Vendor attributes are ignored.
        assert!(Pkcs11Uri::parse("pkcs11:object=a;x-vendor=1?x-other=2").is_ok());
    }

    #[test]
    fn bad_uris_refused() {
        for bad in [
            "pkcs11:objet=typo",
            "pkcs11:object=a;object=b",
            "pkcs11:object=%G1",
            "pkcs11:object=%4",
            "pkcs11:object",
            "pkcs11:slot-id=abc",
            "pkcs11:type=cert",
            "pkcs11:object=a?pin-value=1&pin-source=/f",
            "pkcs11:object=a?pin-source=",
            "pkcs11:object=a?unknown=1",
            "pkcs11:object=%FF",
            "pkcs12:object=a",
        ] {
            assert!(Pkcs11Uri::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn describe_and_debug_hide_the_pin() {
        let u = Pkcs11Uri::parse("pkcs11:token=t;object=k;id=%01%ab?pin-value=s3cret").unwrap();
        assert_eq!(u.describe(), "pkcs11:token=t;object=k;id=%01%AB");
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn pin_from_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "1234\nignored\n").unwrap();
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:object=k?pin-source=file://{}",
            f.display()
        ))
        .unwrap();
        assert_eq!(u.read_pin().unwrap().unwrap().as_str(), "1234");
        let missing = Pkcs11Uri::parse("pkcs11:object=k?pin-source=/nonexistent/pin").unwrap();
        assert!(missing.read_pin().is_err());
    }
}
