//! PKCS#11 keys (HSMs, smart cards, SoftHSM2) through the `cryptoki` crate.
//!
//! A [`Pkcs11Key`] is found by an RFC 7512 URI ([`Pkcs11Uri`]); the private key stays in the token
//! (we only ever ask the token to sign). Design:
//! - One loaded and initialised module per library path for the whole process (a module may be
//!   `C_Initialize`d only once).
//! - A pool of logged-in sessions: a signer takes an idle session or opens one, signs, and puts
//!   it back, so concurrent workers each get their own session (a PKCS#11 session is not
//!   thread-safe) and the pool grows to the number of concurrent signers.
//! - P-256: `CKM_ECDSA_SHA256` when the token offers it, else SHA-256 in process and
//!   `CKM_ECDSA` (SoftHSM2); the token's `r||s` becomes the ASN.1 DER signature DSSE uses.
//!   Ed25519: `CKM_EDDSA` (pure Ed25519), where the token offers it.
//! - A token that goes away (device removed, sessions closed, token re-initialised) fails the
//!   signature with [`SignError::Unavailable`]; the next signature reconnects: it finds the token
//!   again, logs in, finds the key and checks it is still the **same** public key before using it.

mod uri;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::public::{Algorithm, PublicKey};
use crate::signer::{SignError, Signer};
use crate::stream::MessageSource;
use crate::KeyError;
pub use uri::{PinSource, Pkcs11Uri};

/// DER of the P-256 named-curve OID (CKA_EC_PARAMS of a P-256 key).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the Ed25519 OID (CKA_EC_PARAMS of an Ed25519 key, RFC 8410 form).
const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// PrintableString "edwards25519" (the other CKA_EC_PARAMS form PKCS#11 3.0 allows).
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";
/// SPKI prefix of a P-256 key; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// SPKI prefix of an Ed25519 key; the 32-byte key follows.
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A loaded, initialised module.
struct Module {
    ctx: Pkcs11,
    /// Bumped on every re-initialisation.
    epoch: u64,
    last_init: Instant,
}

/// Loaded modules by library path (kept for the process: other keys may share them).
fn modules() -> &'static Mutex<HashMap<PathBuf, Module>> {
    static M: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

fn initialize(ctx: &Pkcs11, path: &Path) -> Result<(), KeyError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(KeyError::Backend(format!(
            "cannot initialise the PKCS#11 module {}: {e}",
            path.display()
        ))),
    }
}

/// The module at `path` and its epoch, loading and initialising it on first use.
fn module(path: &Path) -> Result<(Pkcs11, u64), KeyError> {
    let mut map = modules().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = map.get(path) {
        return Ok((m.ctx.clone(), m.epoch));
    }
    if !path.is_file() {
        return Err(KeyError::NotFound(format!(
            "PKCS#11 module {} does not exist",
            path.display()
        )));
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        KeyError::Backend(format!(
            "cannot load the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    initialize(&ctx, path)?;
    map.insert(
        path.to_path_buf(),
        Module {
            ctx: ctx.clone(),
            epoch: 0,
            last_init: Instant::now(),
        },
    );
    Ok((ctx, 0))
}

/// Least time between two re-initialisations of a module.
const REINIT_FLOOR: Duration = Duration::from_millis(500);

/// Finalise and initialise the module again, so that it scans its slots afresh (how a
/// re-inserted or re-initialised token becomes visible to modules that only scan at
/// `C_Initialize`, SoftHSM2 among them). Every session of the module closes; the other keys
/// on it reconnect on their next signature. Done at most once per [`REINIT_FLOOR`], and not
/// again if another caller already did it since `seen_epoch`.
fn reinitialize(path: &Path, seen_epoch: u64) -> Result<(Pkcs11, u64), KeyError> {
    let mut map = modules().lock().unwrap_or_else(|p| p.into_inner());
    let m = map
        .get_mut(path)
        .ok_or_else(|| KeyError::Backend("PKCS#11 module not loaded".into()))?;
    if m.epoch == seen_epoch && m.last_init.elapsed() >= REINIT_FLOOR {
        let _ = m.ctx.clone().finalize();
        initialize(&m.ctx, path)?;
        m.epoch += 1;
        m.last_init = Instant::now();
    }
    Ok((m.ctx.clone(), m.epoch))
}

/// Is this error a sign that the token or its sessions went away (reconnect may help)?
fn is_token_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid
                | RvError::GeneralError,
            _
        )
    )
}

fn is_pin_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked
                | RvError::UserPinNotInitialized,
            _
        )
    )
}

/// Map a cryptoki error met while connecting to a [`KeyError`] of the right kind.
fn connect_error(what: &str, e: CkError) -> KeyError {
    if is_pin_error(&e) {
        KeyError::Auth(format!("{what}: the token refused the PIN ({e})"))
    } else if is_token_gone(&e) {
        KeyError::Unavailable(format!("{what}: the token is not available ({e})"))
    } else {
        KeyError::Backend(format!("{what}: {e}"))
    }
}

/// Build a public key from CKA_EC_PARAMS and CKA_EC_POINT.
fn public_from_token(params: &[u8], point: &[u8]) -> Result<PublicKey, KeyError> {
    // CKA_EC_POINT is a DER OCTET STRING; a few tokens return the raw point.
    let raw = match point {
        [0x04, len, rest @ ..] if *len as usize == rest.len() => rest,
        _ => point,
    };
    let mut spki = Vec::new();
    if params == P256_PARAMS {
        if raw.len() != 65 || raw[0] != 0x04 {
            return Err(KeyError::Malformed(
                "the token's P-256 public point is not an uncompressed point".into(),
            ));
        }
        spki.extend_from_slice(P256_SPKI_PREFIX);
    } else if params == ED25519_PARAMS_OID || params == ED25519_PARAMS_NAME {
        if raw.len() != 32 {
            return Err(KeyError::Malformed(
                "the token's Ed25519 public key is not 32 bytes".into(),
            ));
        }
        spki.extend_from_slice(ED25519_SPKI_PREFIX);
    } else {
        return Err(KeyError::UnsupportedAlgorithm(
            "the token key is on a curve Stella does not use (supported: P-256, Ed25519)".into(),
        ));
    }
    spki.extend_from_slice(raw);
    PublicKey::from_spki_der(&spki)
}

/// ECDSA `r||s` (fixed width, as PKCS#11 returns it) to an ASN.1 DER `Ecdsa-Sig-Value`.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(KeyError::Malformed(format!(
            "ECDSA signature of {} bytes is not r||s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    fn int(v: &[u8]) -> Vec<u8> {
        let first = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let v = &v[first..];
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    }
    let (ri, si) = (int(r), int(s));
    let body = ri.len() + si.len();
    let mut out = vec![0x30];
    if body >= 0x80 {
        out.push(0x81);
    }
    out.push(body as u8);
    out.extend_from_slice(&ri);
    out.extend_from_slice(&si);
    Ok(out)
}

/// The connected state: valid until the token goes away.
struct Live {
    /// Bumped on every reconnect, so sessions of an old connection are not put back.
    generation: u64,
    slot: Slot,
    key: ObjectHandle,
    /// The token's ECDSA mechanisms.
    ecdsa: EcdsaMechs,
    idle: Vec<Session>,
}

/// How to reach a token key: module, URI and PIN.
struct Conn {
    uri: Pkcs11Uri,
    module_path: PathBuf,
    /// The module and the epoch it was seen at (see [`reinitialize`]).
    module: Mutex<(Pkcs11, u64)>,
    pin: Option<Zeroizing<String>>,
    generation: AtomicU64,
}

/// A key inside a PKCS#11 token.
pub struct Pkcs11Key {
    conn: Conn,
    public: PublicKey,
    state: Mutex<Option<Live>>,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("uri", &self.conn.uri.describe())
            .field("key_id", self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn ctx(&self) -> Pkcs11 {
        self.module
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn rescan(&self) -> Result<Pkcs11, KeyError> {
        let mut m = self.module.lock().unwrap_or_else(|p| p.into_inner());
        *m = reinitialize(&self.module_path, m.1)?;
        Ok(m.0.clone())
    }

    /// Find token and key, log in; returns the state and the key's public key.
    fn connect(&self) -> Result<(Live, PublicKey), KeyError> {
        let what = self.uri.describe();
        let ctx = self.ctx();
        let slot = match find_slot(&ctx, &self.uri) {
            Ok(slot) => slot,
            Err(KeyError::Unavailable(_)) => {
                // The token may have come back (or been re-initialised) since the module
                // scanned its slots: rescan once.
                let ctx = self.rescan()?;
                find_slot(&ctx, &self.uri)?
            }
            Err(e) => return Err(e),
        };
        let ctx = self.ctx();
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| connect_error(&what, e))?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| connect_error(&what, e))?;
        if info.login_required() {
            login(&session, self.pin.as_ref(), &what)?;
        }
        let template = key_template(&self.uri, ObjectClass::PRIVATE_KEY)?;
        let key = find_one(&session, &template, &what, "private key")?;
        let public = read_public(&session, key, &what)?;
        let mechs = ctx
            .get_mechanism_list(slot)
            .map_err(|e| connect_error(&what, e))?;
        let needed = match public.algorithm() {
            Algorithm::Ed25519 => MechanismType::EDDSA,
            Algorithm::EcdsaP256Sha256 => MechanismType::ECDSA,
        };
        let ecdsa = EcdsaMechs {
            sha256: mechs.contains(&MechanismType::ECDSA_SHA256),
            raw: mechs.contains(&MechanismType::ECDSA),
        };
        let usable = mechs.contains(&needed) || (needed == MechanismType::ECDSA && ecdsa.sha256);
        if !usable {
            return Err(KeyError::UnsupportedAlgorithm(format!(
                "{what}: the token does not offer {needed} for this {} key",
                public.algorithm()
            )));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok((
            Live {
                generation,
                slot,
                key,
                ecdsa,
                idle: vec![session],
            },
            public,
        ))
    }
}

/// Find the one token the URI selects.
fn find_slot(ctx: &Pkcs11, u: &Pkcs11Uri) -> Result<Slot, KeyError> {
    let what = u.describe();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| connect_error(&what, e))?;
    let mut found = Vec::new();
    for slot in slots {
        if u.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = match ctx.get_token_info(slot) {
            Ok(i) => i,
            Err(_) => continue,
        };
        if !info.token_initialized() {
            continue;
        }
        let ok = u
            .token
            .as_deref()
            .is_none_or(|t| info.label().trim_end() == t)
            && u.serial
                .as_deref()
                .is_none_or(|s| info.serial_number().trim_end() == s)
            && u.manufacturer
                .as_deref()
                .is_none_or(|m| info.manufacturer_id().trim_end() == m)
            && u.model
                .as_deref()
                .is_none_or(|m| info.model().trim_end() == m);
        if ok {
            found.push(slot);
        }
    }
    match found.len() {
        0 => Err(KeyError::Unavailable(format!(
            "{what}: no token matches (is the token present and initialised?)"
        ))),
        1 => Ok(found[0]),
        n => Err(KeyError::Reference(format!(
            "{what}: {n} tokens match; add token=, serial= or slot-id= to the URI"
        ))),
    }
}

fn login(session: &Session, pin: Option<&Zeroizing<String>>, what: &str) -> Result<(), KeyError> {
    let pin = match pin {
        Some(p) => AuthPin::from(p.as_str().to_string()),
        None => {
            return Err(KeyError::Auth(format!(
                "{what}: the token needs a PIN: add pin-source=FILE or pin-value= to the URI, or set STELLA_PKCS11_PIN"
            )))
        }
    };
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(connect_error(what, e)),
    }
}

fn key_template(u: &Pkcs11Uri, class: ObjectClass) -> Result<Vec<Attribute>, KeyError> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(o) = &u.object {
        t.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &u.id {
        t.push(Attribute::Id(id.clone()));
    }
    if t.len() == 1 {
        return Err(KeyError::Reference(format!(
            "{}: name the key with object= (label) or id=",
            u.describe()
        )));
    }
    Ok(t)
}

fn find_one(
    session: &Session,
    template: &[Attribute],
    what: &str,
    kind: &str,
) -> Result<ObjectHandle, KeyError> {
    let found = session
        .find_objects(template)
        .map_err(|e| connect_error(what, e))?;
    match found.len() {
        0 => Err(KeyError::NotFound(format!(
            "{what}: no {kind} in the token"
        ))),
        1 => Ok(found[0]),
        n => Err(KeyError::Reference(format!(
            "{what}: {n} {kind}s match; make the URI more specific (id=)"
        ))),
    }
}

/// The public key object matching a private key (same CKA_ID and label).
fn read_public(
    session: &Session,
    private: ObjectHandle,
    what: &str,
) -> Result<PublicKey, KeyError> {
    let attrs = session
        .get_attributes(private, &[AttributeType::Id, AttributeType::Label])
        .map_err(|e| connect_error(what, e))?;
    let mut t = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    for a in attrs {
        match a {
            Attribute::Id(v) if !v.is_empty() => t.push(Attribute::Id(v)),
            Attribute::Label(v) if !v.is_empty() => t.push(Attribute::Label(v)),
            _ => {}
        }
    }
    let public = find_one(session, &t, what, "public key object")?;
    public_of_object(session, public, what)
}

/// The public key held by the public key object `public` (its EC parameters and point).
fn public_of_object(
    session: &Session,
    public: ObjectHandle,
    what: &str,
) -> Result<PublicKey, KeyError> {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| connect_error(what, e))?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    match (params, point) {
        (Some(params), Some(point)) => public_from_token(&params, &point),
        _ => Err(KeyError::UnsupportedAlgorithm(format!(
            "{what}: the key is not an EC or EdDSA key"
        ))),
    }
}

impl Pkcs11Key {
    /// Open the key a URI names: load the module, find the token, log in, find the key and read
    /// its public key. Wrong PIN → [`KeyError::Auth`]; no such key → [`KeyError::NotFound`].
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, KeyError> {
        if uri.object_type.as_deref() == Some("public") {
            return Err(KeyError::Reference(format!(
                "{}: type=public names a public key; signing needs the private key (type=private or no type)",
                uri.describe()
            )));
        }
        let module_path = uri.module()?;
        let conn = Conn {
            uri: uri.clone(),
            module: Mutex::new(module(&module_path)?),
            module_path,
            pin: uri.read_pin()?,
            generation: AtomicU64::new(0),
        };
        let (live, public) = conn.connect()?;
        Ok(Pkcs11Key {
            conn,
            public,
            state: Mutex::new(Some(live)),
        })
    }

    /// Take a session (idle or new), connecting first if needed.
    fn checkout(&self) -> Result<(u64, ObjectHandle, EcdsaMechs, Session), SignError> {
        let unavailable = |reason: String| SignError::Unavailable {
            key_id: self.public.key_id().clone(),
            reason,
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.is_none() {
            let (live, public) = self.conn.connect().map_err(|e| match e {
                KeyError::Auth(_) | KeyError::Unavailable(_) | KeyError::NotFound(_) => {
                    unavailable(e.to_string())
                }
                other => SignError::Backend {
                    key_id: self.public.key_id().clone(),
                    reason: other.to_string(),
                },
            })?;
            if public != self.public {
                return Err(unavailable(format!(
                    "{} now holds a different key ({}); refusing to sign with it",
                    self.conn.uri.describe(),
                    public.key_id()
                )));
            }
            *st = Some(live);
        }
        let live = st
            .as_mut()
            .ok_or_else(|| unavailable("not connected".into()))?;
        let session = match live.idle.pop() {
            Some(s) => s,
            None => self
                .conn
                .ctx()
                .open_ro_session(live.slot)
                .map_err(|e| unavailable(format!("{}: {e}", self.conn.uri.describe())))?,
        };
        Ok((live.generation, live.key, live.ecdsa, session))
    }

    fn checkin(&self, generation: u64, session: Session) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = st.as_mut() {
            if live.generation == generation {
                live.idle.push(session);
            }
        }
    }

    /// Forget the connection (sessions are closed on drop), unless a newer one replaced it.
    fn reset(&self, generation: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.as_ref().is_some_and(|l| l.generation == generation) {
            *st = None;
        }
    }

    fn sign_once(
        &self,
        session: &Session,
        key: ObjectHandle,
        ecdsa: EcdsaMechs,
        input: Input<'_>,
    ) -> Result<Signed, CkError> {
        let sig = match (self.public.algorithm(), input) {
            (Algorithm::Ed25519, Input::Message(m)) => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                key,
                m,
            )?,
            (Algorithm::EcdsaP256Sha256, Input::Message(m)) if ecdsa.sha256 => {
                session.sign(&Mechanism::EcdsaSha256, key, m)?
            }
            (Algorithm::EcdsaP256Sha256, Input::Message(m)) => {
                session.sign(&Mechanism::Ecdsa, key, &crate::sha256(m))?
            }
            (Algorithm::EcdsaP256Sha256, Input::Sha256(d)) if ecdsa.raw => {
                session.sign(&Mechanism::Ecdsa, key, d)?
            }
            // A prehash the token cannot sign (no raw CKM_ECDSA), or a prehash for a key that
            // signs whole messages: the caller falls back to the message.
            (_, Input::Sha256(_)) => return Ok(Signed::NeedsMessage),
        };
        Ok(Signed::Raw(sig))
    }

    /// Sign with one retry (the first failure of a stale connection reconnects); `None` when
    /// the token cannot sign `input` as given (see [`Signed::NeedsMessage`]).
    fn sign_input(&self, input: Input<'_>) -> Result<Option<Vec<u8>>, SignError> {
        let key_id = || self.public.key_id().clone();
        let mut last = String::new();
        for _ in 0..2 {
            let (generation, key, ecdsa, session) = self.checkout()?;
            match self.sign_once(&session, key, ecdsa, input) {
                Ok(Signed::NeedsMessage) => {
                    self.checkin(generation, session);
                    return Ok(None);
                }
                Ok(Signed::Raw(sig)) => {
                    self.checkin(generation, session);
                    return self.signature_from_token(sig).map(Some);
                }
                Err(e) if is_token_gone(&e) => {
                    drop(session);
                    self.reset(generation);
                    last = format!("{}: {e}", self.conn.uri.describe());
                }
                Err(e) => {
                    return Err(SignError::Backend {
                        key_id: key_id(),
                        reason: format!("{}: {e}", self.conn.uri.describe()),
                    })
                }
            }
        }
        Err(SignError::Unavailable {
            key_id: key_id(),
            reason: last,
        })
    }

    /// The token's raw signature in our encoding (Ed25519 as is, P-256 `r||s` as DER).
    fn signature_from_token(&self, sig: Vec<u8>) -> Result<Vec<u8>, SignError> {
        let key_id = || self.public.key_id().clone();
        match self.public.algorithm() {
            Algorithm::Ed25519 if sig.len() == 64 => Ok(sig),
            Algorithm::Ed25519 => Err(SignError::Backend {
                key_id: key_id(),
                reason: format!("the token returned a {}-byte Ed25519 signature", sig.len()),
            }),
            Algorithm::EcdsaP256Sha256 if sig.len() == 64 => {
                ecdsa_raw_to_der(&sig).map_err(|e| SignError::Backend {
                    key_id: key_id(),
                    reason: e.to_string(),
                })
            }
            Algorithm::EcdsaP256Sha256 => Err(SignError::Backend {
                key_id: key_id(),
                reason: format!(
                    "the token returned a {}-byte P-256 signature (want r||s, 64)",
                    sig.len()
                ),
            }),
        }
    }
}

/// The ECDSA mechanisms a token offers.
#[derive(Debug, Clone, Copy)]
struct EcdsaMechs {
    /// CKM_ECDSA_SHA256: the token hashes the message.
    sha256: bool,
    /// CKM_ECDSA: the token signs a digest made here.
    raw: bool,
}

/// What the token is asked to sign.
#[derive(Debug, Clone, Copy)]
enum Input<'a> {
    /// The whole message.
    Message(&'a [u8]),
    /// SHA-256 of the message (P-256 only), so a message of any size is never held.
    Sha256(&'a [u8]),
}

enum Signed {
    Raw(Vec<u8>),
    NeedsMessage,
}

impl Signer for Pkcs11Key {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_input(Input::Message(message))?
            .ok_or_else(|| SignError::Backend {
                key_id: self.public.key_id().clone(),
                reason: "the token cannot sign this message".into(),
            })
    }

    /// P-256: the message is hashed here in one pass and the token signs the digest
    /// (CKM_ECDSA), so memory does not grow with the message. A token without raw CKM_ECDSA,
    /// and Ed25519 (PureEdDSA needs the whole message inside the token), read the message
    /// into memory as the default does.
    fn sign_stream(&self, message: &mut dyn MessageSource) -> Result<Vec<u8>, SignError> {
        if self.public.algorithm() == Algorithm::EcdsaP256Sha256 {
            let digest = crate::stream::sha256_of(message).map_err(SignError::Read)?;
            if let Some(sig) = self.sign_input(Input::Sha256(digest.as_ref()))? {
                return Ok(sig);
            }
        }
        let mut bytes = Vec::new();
        message
            .feed(&mut |c| bytes.extend_from_slice(c))
            .map_err(SignError::Read)?;
        self.sign(&bytes)
    }

    fn mode(&self) -> &'static str {
        "hsm"
    }
}

/// The module and the token slot a URI names (rescanning once if the token is not seen).
fn open_slot(uri: &Pkcs11Uri) -> Result<(Pkcs11, Slot), KeyError> {
    let path = uri.module()?;
    let (ctx, epoch) = module(&path)?;
    match find_slot(&ctx, uri) {
        Err(KeyError::Unavailable(_)) => {
            let (ctx, _) = reinitialize(&path, epoch)?;
            let slot = find_slot(&ctx, uri)?;
            Ok((ctx, slot))
        }
        other => other.map(|slot| (ctx, slot)),
    }
}

/// What [`generate`] made.
#[derive(Debug)]
pub struct Generated {
    pub public: PublicKey,
    /// The CKA_ID given to both halves (the URI's `id`, or a random one).
    pub id: Vec<u8>,
}

/// Create a key pair inside the token the URI names: private half sensitive and
/// non-extractable, both halves labelled with `object` and the same CKA_ID. Refuses to add a
/// second key under a label or id that already names one.
pub fn generate(uri: &Pkcs11Uri, algorithm: Algorithm) -> Result<Generated, KeyError> {
    let what = uri.describe();
    let label = uri.object.clone().ok_or_else(|| {
        KeyError::Reference(format!("{what}: name the new key with object=LABEL"))
    })?;
    let pin = uri.read_pin()?;
    let (ctx, slot) = open_slot(uri)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| connect_error(&what, e))?;
    login(&session, pin.as_ref(), &what)?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let existing = session
            .find_objects(&key_template(uri, class)?)
            .map_err(|e| connect_error(&what, e))?;
        if !existing.is_empty() {
            return Err(KeyError::Reference(format!(
                "{what}: the token already holds a key with this label/id; choose another object= (keys are never overwritten)"
            )));
        }
    }
    let id = match &uri.id {
        Some(id) => id.clone(),
        None => {
            let mut id = vec![0u8; 16];
            aws_lc_rs::rand::fill(&mut id).map_err(|_| KeyError::Rng)?;
            id
        }
    };
    let (mechanism, params, key_type) = match algorithm {
        Algorithm::EcdsaP256Sha256 => (Mechanism::EccKeyPairGen, P256_PARAMS, KeyType::EC),
        Algorithm::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            ED25519_PARAMS_OID,
            KeyType::EC_EDWARDS,
        ),
    };
    let public_template = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::KeyType(key_type),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private_template = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::KeyType(key_type),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let (_public, private) = session
        .generate_key_pair(&mechanism, &public_template, &private_template)
        .map_err(|e| match e {
            CkError::Pkcs11(RvError::MechanismInvalid, _) => KeyError::UnsupportedAlgorithm(
                format!("{what}: the token cannot generate {algorithm} keys"),
            ),
            e => connect_error(&what, e),
        })?;
    let public = read_public(&session, private, &what)?;
    Ok(Generated { public, id })
}

/// The public key of a token key (for keyrings), without signing anything. `type=public` URIs
/// are fine here; no PIN is needed when the public object is readable without login.
pub fn public_key(uri: &Pkcs11Uri) -> Result<PublicKey, KeyError> {
    let what = uri.describe();
    let (ctx, slot) = open_slot(uri)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| connect_error(&what, e))?;
    if let Some(pin) = uri.read_pin()? {
        login(&session, Some(&pin), &what)?;
    }
    let public = find_one(
        &session,
        &key_template(uri, ObjectClass::PUBLIC_KEY)?,
        &what,
        "public key object",
    )?;
    public_of_object(&session, public, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_to_der_shapes() {
        // High bit set → 0x00 pad; leading zeros stripped; all-zero → one zero byte.
        let mut raw = vec![0x80; 32];
        raw.extend_from_slice(&[0x00; 31]);
        raw.push(0x05);
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
        let zeros = ecdsa_raw_to_der(&[0u8; 64]).unwrap();
        assert_eq!(zeros, vec![0x30, 6, 2, 1, 0, 2, 1, 0]);
        assert!(ecdsa_raw_to_der(&[1u8; 63]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }

    #[test]
    fn raw_to_der_verifies_like_a_der_signature() {
        // Sign with a file key (DER), split it into r||s, convert back: same bytes.
        let k = crate::FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        for i in 0..50u8 {
            let der = k.sign(&[i]).unwrap();
            let raw = der_to_raw(&der);
            assert_eq!(ecdsa_raw_to_der(&raw).unwrap(), der);
        }
    }

    /// Test helper: DER → fixed 32+32 (the inverse, written independently).
    fn der_to_raw(der: &[u8]) -> Vec<u8> {
        let mut i = 2;
        let mut out = Vec::new();
        for _ in 0..2 {
            assert_eq!(der[i], 2);
            let len = der[i + 1] as usize;
            let v = &der[i + 2..i + 2 + len];
            let v = if v.len() > 32 { &v[v.len() - 32..] } else { v };
            out.extend(std::iter::repeat_n(0u8, 32 - v.len()));
            out.extend_from_slice(v);
            i += 2 + len;
        }
        out
    }

    #[test]
    fn token_public_points() {
        let k = crate::FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let spki = k.public_key().spki_der().to_vec();
        let point = &spki[P256_SPKI_PREFIX.len()..];
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(point);
        assert_eq!(
            &public_from_token(P256_PARAMS, &wrapped).unwrap(),
            k.public_key()
        );
        assert_eq!(
            &public_from_token(P256_PARAMS, point).unwrap(),
            k.public_key()
        );
        // P-384 params refused.
        assert!(public_from_token(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], point).is_err());
        assert!(public_from_token(ED25519_PARAMS_OID, point).is_err());
    }
}
