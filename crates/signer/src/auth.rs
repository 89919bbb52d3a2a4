//! Caller authentication: the OpTok (a JWT access token from Authority) and its sender
//! constraint — a DPoP proof (RFC 9449) or the TLS client certificate (RFC 8705).
//!
//! Token checks, in order: the `Authorization` scheme (`DPoP` or `Bearer`); the JWS shape; the
//! algorithm against the asymmetric allow-list (so `none` and `HS256` die before any key is
//! touched); `typ` = `at+jwt` (RFC 9068: an ID token or a DPoP proof is not an access token);
//! the signature with an Authority key; `iss`; `aud` contains the signer's audience; `exp`,
//! `nbf`, `iat` within the clock skew; `tid` and `inst` present. Then the sender constraint: a
//! token with no `cnf` is refused (SPEC §4: sender constraint required); `cnf.jkt` demands the
//! `DPoP` scheme and a valid proof for that key (a DPoP-bound token sent as `Bearer` is
//! refused); `cnf.x5t#S256` demands a TLS client certificate with that SHA-256 thumbprint.
//! Scope comes last, so a `403 insufficient_scope` is only ever said to a proven holder.
//!
//! DPoP proof checks (RFC 9449 §4.3): exactly one `DPoP` header; a JWS with `typ: dpop+jwt`,
//! an allowed asymmetric `alg` and a public `jwk` (private members refused) that verifies it;
//! `htm` equals the method; `htu` equals the request URI (scheme, host, port, path; query and
//! fragment ignored); `iat` no older than `max_age_seconds` and not in the future beyond the
//! skew; `ath` equals base64url(SHA-256(access token)); the `jwk` thumbprint equals `cnf.jkt`;
//! the server nonce when required; and finally `jti` single-use within the window (replay
//! cache; checked last, so invalid proofs do not fill the cache).

use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use stella_keyless::token::claim_strings;
use stella_store::{ReplayCache, ReplayKey, SharedCache};

use crate::error::{ApiError, Code};
use crate::jose::{Alg, CompactJws, JoseError, Jwk, Jws, Scalar, StrictObject};
use crate::jwks::{Jwks, JwksError};

/// The validated access-token claims the service uses.
#[derive(Debug, Clone, Default)]
pub struct TokenClaims {
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub tenant: Option<String>,
    pub installation: Option<String>,
    pub scopes: Vec<String>,
    pub jkt: Option<String>,
    pub x5t: Option<String>,
    pub exp: i64,
}

/// How the caller proved possession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Dpop { jkt: String },
    Mtls { x5t: String },
}

impl Binding {
    pub fn describe(&self) -> String {
        match self {
            Binding::Dpop { jkt } => format!("dpop jkt={jkt}"),
            Binding::Mtls { x5t } => format!("mtls x5t#S256={x5t}"),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared with the verified-token cache: a cache hit hands out the same claims, not a copy.
    pub claims: Arc<TokenClaims>,
    pub tenant: String,
    pub installation: String,
    pub binding: Binding,
}

/// What authentication needs from the request.
pub struct AuthRequest<'a> {
    pub method: &'a str,
    /// The URI the request was sent to (scheme, host, port, path).
    pub target: &'a url::Url,
    pub authorization: Option<&'a str>,
    pub dpop: Vec<&'a [u8]>,
    /// SHA-256 of the TLS client certificate (DER), if one was presented.
    pub client_cert_sha256: Option<[u8; 32]>,
}

/// A failure with whatever was learnt about the caller before it (for the audit record).
#[derive(Debug)]
pub struct AuthFailure {
    pub error: ApiError,
    pub claims: Option<Arc<TokenClaims>>,
}

impl From<ApiError> for AuthFailure {
    fn from(error: ApiError) -> Self {
        AuthFailure {
            error,
            claims: None,
        }
    }
}

/// Access tokens whose signature and static claims were verified, keyed by SHA-256 of the
/// token. A hit skips only the signature check and the parse: expiry, `nbf` and everything
/// about the request (sender constraint, DPoP proof, scope) are checked every time. Entries
/// leave at the token's `exp`; the cache is bounded: when a shard is full, the entry that
/// expires first leaves (expired ones first, by construction) — taken from the front of an
/// expiry heap, so no lookup scans the shard and the cache is never cleared wholesale (which
/// would send every caller back to full verification at once). Consequence to know: a token
/// signed by a key the Authority has since removed from its JWKS stays accepted until it
/// expires (access tokens are minutes).
/// The cache's key: SHA-256 of the token. Equality is constant-time, so a lookup's timing
/// says nothing about how much of a stored token's digest a probe shares (the map's hasher is
/// SipHash with a random key, as `HashMap` always is).
#[derive(Clone, Copy, Eq)]
struct TokenKey([u8; 32]);

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

#[derive(Default)]
struct CacheShard {
    map: std::collections::HashMap<TokenKey, (Arc<TokenClaims>, Option<i64>)>,
    /// (exp, key) of every entry, earliest first; may hold stale pairs of replaced entries.
    by_exp: std::collections::BinaryHeap<std::cmp::Reverse<(i64, [u8; 32])>>,
}

impl CacheShard {
    /// Drop the entry that expires first (skipping stale heap pairs).
    fn evict_first(&mut self) {
        while let Some(std::cmp::Reverse((exp, k))) = self.by_exp.pop() {
            if self
                .map
                .get(&TokenKey(k))
                .is_some_and(|(c, _)| c.exp == exp)
            {
                self.map.remove(&TokenKey(k));
                return;
            }
        }
    }
}

pub struct TokenCache {
    shards: Vec<std::sync::Mutex<CacheShard>>,
    per_shard: usize,
}

impl TokenCache {
    pub fn new(entries: usize) -> Self {
        TokenCache {
            shards: (0..16).map(|_| Default::default()).collect(),
            per_shard: (entries / 16).max(1),
        }
    }

    fn shard(&self, k: &[u8; 32]) -> std::sync::MutexGuard<'_, CacheShard> {
        self.shards[k[0] as usize % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The cached claims (shared, not copied) and `nbf`.
    fn get(&self, k: &[u8; 32]) -> Option<(Arc<TokenClaims>, Option<i64>)> {
        self.shard(k).map.get(&TokenKey(*k)).cloned()
    }

    fn put(&self, k: [u8; 32], claims: impl Into<Arc<TokenClaims>>, nbf: Option<i64>, now: i64) {
        let claims = claims.into();
        let mut g = self.shard(&k);
        // Expired entries leave from the front.
        while g
            .by_exp
            .peek()
            .is_some_and(|std::cmp::Reverse((exp, _))| *exp < now)
        {
            g.evict_first();
        }
        if !g.map.contains_key(&TokenKey(k)) {
            while g.map.len() >= self.per_shard && !g.by_exp.is_empty() {
                g.evict_first();
            }
        }
        g.by_exp.push(std::cmp::Reverse((claims.exp, k)));
        g.map.insert(TokenKey(k), (claims, nbf));
        // Replaced entries leave stale heap pairs: compact once they outnumber the entries.
        if g.by_exp.len() > 2 * self.per_shard {
            let live: Vec<_> = g
                .map
                .iter()
                .map(|(k, (c, _))| std::cmp::Reverse((c.exp, k.0)))
                .collect();
            g.by_exp = live.into();
        }
    }
}

/// Token and proof validation settings plus their state (JWKS cache, replay cache, nonces).
pub struct Authenticator {
    pub jwks: Jwks,
    pub issuer: String,
    pub audience: String,
    pub scope: String,
    pub token_algs: Vec<Alg>,
    pub skew: i64,
    pub require_typ: bool,
    pub dpop: DpopValidator,
    /// `None`: every token is verified in full on every request.
    pub token_cache: Option<TokenCache>,
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn invalid_token(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidToken, detail)
}

fn claim_str(m: &serde_json::Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Latest accepted NumericDate: 9999-12-31T23:59:59Z. Every time taken from outside (token
/// and proof claims) is range-checked to `0..=MAX_NUMERIC_DATE` before any arithmetic, and
/// the arithmetic is checked anyway, so no crafted value (negative, `i64::MIN`, `u64::MAX`,
/// `1e300`) can wrap a comparison into passing.
pub(crate) const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// A JSON NumericDate (RFC 7519 §2): an integer, or a finite number whose integral part is
/// taken, within `0..=MAX_NUMERIC_DATE`. `None` for anything else.
pub(crate) fn numeric_date(v: &Value) -> Option<i64> {
    let t = match v.as_i64() {
        Some(i) => i,
        None => {
            let f = v.as_f64().filter(|f| f.is_finite())?;
            if !(0.0..=MAX_NUMERIC_DATE as f64).contains(&f) {
                return None;
            }
            f.trunc() as i64
        }
    };
    (0..=MAX_NUMERIC_DATE).contains(&t).then_some(t)
}

/// Is `t` after `now + slack` (in the future beyond the slack)? Checked: an overflow counts
/// as "yes" (refuse).
pub(crate) fn after(t: i64, now: i64, slack: i64) -> bool {
    now.checked_add(slack).is_none_or(|limit| t > limit)
}

/// Is `t` more than `max_age` seconds before `now`? Checked: an overflow counts as "yes".
pub(crate) fn older_than(t: i64, now: i64, max_age: i64) -> bool {
    now.checked_sub(t).is_none_or(|age| age > max_age)
}

fn claim_int(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<i64>, ApiError> {
    match m.get(k) {
        None => Ok(None),
        Some(v) => numeric_date(v).map(Some).ok_or_else(|| {
            invalid_token(format!(
                "token claim `{k}` is not a valid NumericDate (0..={MAX_NUMERIC_DATE})"
            ))
        }),
    }
}

impl Authenticator {
    /// Authenticate a request for the sign routes (scope [`Authenticator::scope`]).
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Caller, AuthFailure> {
        self.authenticate_scoped(req, &self.scope).await
    }

    /// Authenticate a request that needs `scope` (e.g. `signer.audit` for the audit API):
    /// the same token and sender-constraint checks, only the required scope differs.
    pub async fn authenticate_scoped(
        &self,
        req: &AuthRequest<'_>,
        scope: &str,
    ) -> Result<Caller, AuthFailure> {
        let now = now_unix();
        // The challenge's algorithm list, written only when a request is refused.
        let with_algs = |mut e: ApiError, bearer: bool| {
            e.dpop_algs = Some(self.dpop.algs_header());
            e.bearer_challenge = bearer;
            e
        };
        let Some(authz) = req.authorization else {
            return Err(with_algs(
                invalid_token("no access token (Authorization: DPoP <token>)"),
                true,
            )
            .into());
        };
        let (scheme, token) = authz.split_once(' ').unwrap_or((authz, ""));
        let token = token.trim();
        let dpop_scheme = if scheme.eq_ignore_ascii_case("dpop") {
            true
        } else if scheme.eq_ignore_ascii_case("bearer") {
            false
        } else {
            return Err(with_algs(
                invalid_token(format!("unsupported authorization scheme {scheme:?}")),
                true,
            )
            .into());
        };
        let bearer = !dpop_scheme;
        // SHA-256 of the token, once: the verified-token cache key and the proof's `ath`.
        let token_hash = stella_keys::sha256(token.as_bytes());
        let claims = self
            .validate_token(token, &token_hash, now)
            .await
            .map_err(|e| AuthFailure::from(with_algs(e, bearer)))?;
        let fail = |e: ApiError, claims: &Arc<TokenClaims>| AuthFailure {
            error: with_algs(e, bearer),
            claims: Some(Arc::clone(claims)),
        };
        let (Some(tenant), Some(installation)) =
            (claims.tenant.clone(), claims.installation.clone())
        else {
            return Err(fail(
                invalid_token("the token has no tenant (`tid`) or installation (`inst`) claim"),
                &claims,
            ));
        };
        // Sender constraint.
        if claims.jkt.is_none() && claims.x5t.is_none() {
            return Err(fail(
                invalid_token("the token is not sender-constrained (no `cnf`): DPoP or mTLS binding is required"),
                &claims,
            ));
        }
        let mut binding = None;
        if let Some(jkt) = &claims.jkt {
            if !dpop_scheme {
                return Err(fail(
                    invalid_token(
                        "a DPoP-bound token must be sent with the DPoP scheme, not Bearer",
                    ),
                    &claims,
                ));
            }
            self.dpop
                .validate(req, &token_hash, jkt, &tenant, now)
                .await
                .map_err(|e| fail(e, &claims))?;
            binding = Some(Binding::Dpop { jkt: jkt.clone() });
        } else if dpop_scheme {
            return Err(fail(
                invalid_token(
                    "the DPoP scheme was used but the token is not DPoP-bound (no cnf.jkt)",
                ),
                &claims,
            ));
        }
        if let Some(x5t) = &claims.x5t {
            let Some(cert) = req.client_cert_sha256 else {
                return Err(fail(
                    invalid_token(
                        "the token is bound to a client certificate, but none was presented",
                    ),
                    &claims,
                ));
            };
            let presented = URL_SAFE_NO_PAD.encode(cert);
            if presented != *x5t {
                return Err(fail(
                    invalid_token("the token is bound to another client certificate"),
                    &claims,
                ));
            }
            if binding.is_none() {
                binding = Some(Binding::Mtls { x5t: x5t.clone() });
            }
        }
        if !claims.scopes.iter().any(|s| s == scope) {
            let mut e = ApiError::new(
                Code::InsufficientScope,
                format!("the token lacks the `{scope}` scope"),
            );
            e.scope = Some(scope.to_string());
            return Err(fail(e, &claims));
        }
        let Some(binding) = binding else {
            return Err(fail(
                invalid_token("no sender constraint satisfied"),
                &claims,
            ));
        };
        Ok(Caller {
            claims,
            tenant,
            installation,
            binding,
        })
    }

    async fn validate_token(
        &self,
        token: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<Arc<TokenClaims>, ApiError> {
        if token.is_empty() {
            return Err(invalid_token("empty access token"));
        }
        let Some(cache) = &self.token_cache else {
            return self
                .verify_token(token, now)
                .await
                .map(|(c, _)| Arc::new(c));
        };
        let key = *token_hash;
        if let Some((claims, nbf)) = cache.get(&key) {
            // Time checks again: the cached verification is not a licence to outlive `exp`.
            if older_than(claims.exp, now, self.skew) {
                return Err(invalid_token("access token has expired"));
            }
            if nbf.is_some_and(|n| after(n, now, self.skew)) {
                return Err(invalid_token("access token is not valid yet (`nbf`)"));
            }
            return Ok(claims);
        }
        let (claims, nbf) = self.verify_token(token, now).await?;
        let claims = Arc::new(claims);
        cache.put(key, Arc::clone(&claims), nbf, now);
        Ok(claims)
    }

    /// Full verification: structure, algorithm, signature, claims.
    async fn verify_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(TokenClaims, Option<i64>), ApiError> {
        let jws = Jws::parse(token).map_err(|e| invalid_token(format!("access token: {e}")))?;
        if !self.token_algs.contains(&jws.alg) {
            return Err(invalid_token(format!(
                "access token algorithm {} is not accepted",
                jws.alg
            )));
        }
        if self.require_typ {
            let typ = jws.header_str("typ").unwrap_or("").to_ascii_lowercase();
            if typ != "at+jwt" && typ != "application/at+jwt" {
                return Err(invalid_token(
                    "access token `typ` must be `at+jwt` (RFC 9068)",
                ));
            }
        }
        self.jwks.verify(&jws).await.map_err(|e| match e {
            JwksError::Unavailable(m) => ApiError::unavailable(
                "the Authority's keys are unavailable; retry later",
                format!("JWKS: {m}"),
            ),
            other => invalid_token(other.to_string()),
        })?;
        let c = &jws.claims;
        if claim_str(c, "iss").as_deref() != Some(self.issuer.as_str()) {
            return Err(invalid_token("access token issuer (`iss`) is not trusted"));
        }
        if !claim_strings(c.get("aud"), std::iter::once).contains(&self.audience) {
            return Err(invalid_token(format!(
                "access token audience (`aud`) does not include {:?}",
                self.audience
            )));
        }
        let exp = claim_int(c, "exp")?.ok_or_else(|| invalid_token("access token has no `exp`"))?;
        if older_than(exp, now, self.skew) {
            return Err(invalid_token("access token has expired"));
        }
        let nbf = claim_int(c, "nbf")?;
        if let Some(nbf) = nbf {
            if after(nbf, now, self.skew) {
                return Err(invalid_token("access token is not valid yet (`nbf`)"));
            }
        }
        let iat = claim_int(c, "iat")?.ok_or_else(|| invalid_token("access token has no `iat`"))?;
        if after(iat, now, self.skew) {
            return Err(invalid_token(
                "access token was issued in the future (`iat`)",
            ));
        }
        let scopes = claim_strings(
            c.get("scope").or_else(|| c.get("scp")),
            str::split_whitespace,
        );
        let cnf = c.get("cnf").and_then(Value::as_object);
        let claims = TokenClaims {
            sub: claim_str(c, "sub"),
            client_id: claim_str(c, "client_id").or_else(|| claim_str(c, "azp")),
            tenant: claim_str(c, "tid"),
            installation: claim_str(c, "inst"),
            scopes,
            jkt: cnf.and_then(|m| claim_str(m, "jkt")),
            x5t: cnf.and_then(|m| claim_str(m, "x5t#S256")),
            exp,
        };
        Ok((claims, nbf))
    }
}

/// Stateless server nonces: `base64url(issued_at_be64 || HMAC-SHA256(key, issued_at)[..16])`.
/// Replicas sharing the key accept each other's nonces.
///
/// The key is either fixed (`dpop.nonce_secret_env`, or one given by the embedding program)
/// or rotated every `dpop.nonce_rotation_seconds`: the key of epoch `issued_at / period` signs
/// the nonce, and the keys of the current, previous and next epoch are held. Rotating keys
/// come from a [`SharedCache`] (Redis: the first replica to ask stores 32 random bytes under
/// `dpop-nonce:<epoch>` with `SET NX`, every replica reads the same) or, with one replica,
/// from the system RNG. A nonce whose epoch key is not held is refused; if the current key
/// cannot be had (Redis unreachable at an epoch change) the request is refused 503.
pub struct NonceIssuer {
    keys: NonceKeys,
    lifetime: i64,
}

enum NonceKeys {
    Fixed(Box<hmac::Key>),
    Rotating(RotatingKeys),
}

struct RotatingKeys {
    period: i64,
    shared: Option<Arc<dyn SharedCache>>,
    /// (epoch, key), at most the previous, current and next epoch.
    held: std::sync::RwLock<Vec<(i64, hmac::Key)>>,
}

/// The nonce key of the current epoch cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("the DPoP nonce key of epoch {epoch} is unavailable: {source}")]
pub struct NonceKeyError {
    epoch: i64,
    #[source]
    source: stella_store::StoreError,
}

impl RotatingKeys {
    fn epoch(&self, t: i64) -> i64 {
        t.div_euclid(self.period)
    }

    fn key(&self, epoch: i64) -> Option<hmac::Key> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, k)| k.clone())
    }

    async fn fetch(&self, epoch: i64) -> Result<hmac::Key, stella_store::StoreError> {
        let mut fresh = zeroize::Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut fresh)
            .map_err(|_| stella_store::StoreError::Database("RNG failure".into()))?;
        let secret = match &self.shared {
            None => fresh,
            Some(c) => {
                // Kept for three periods: the previous epoch's key is still needed while the
                // current one runs.
                let ttl = std::time::Duration::from_secs(
                    u64::try_from(self.period.saturating_mul(3)).unwrap_or(u64::MAX),
                );
                let v = zeroize::Zeroizing::new(
                    c.get_or_put(&format!("dpop-nonce:{epoch}"), fresh.to_vec(), ttl)
                        .await?,
                );
                if v.len() < 32 {
                    return Err(stella_store::StoreError::Corrupt {
                        seq: 0,
                        reason: format!("DPoP nonce key of epoch {epoch} is too short"),
                    });
                }
                v
            }
        };
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &secret))
    }

    /// Hold the keys of the current epoch (an error if it cannot be had) and, in the last
    /// tenth of the epoch, of the next one (best effort); drop older ones.
    async fn ensure(&self, now: i64) -> Result<(), NonceKeyError> {
        let cur = self.epoch(now);
        let mut want = vec![cur];
        if now.rem_euclid(self.period) >= self.period - (self.period / 10).max(1) {
            want.push(cur.saturating_add(1));
        }
        for e in want {
            if self.key(e).is_some() {
                continue;
            }
            match self.fetch(e).await {
                Ok(k) => {
                    let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
                    held.retain(|(x, _)| *x >= cur.saturating_sub(1) && *x != e);
                    held.push((e, k));
                }
                Err(source) if e == cur => return Err(NonceKeyError { epoch: e, source }),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot fetch the next DPoP nonce key yet");
                }
            }
        }
        Ok(())
    }
}

impl NonceIssuer {
    /// A fixed key.
    pub fn new(secret: &[u8], lifetime_seconds: u64) -> Self {
        NonceIssuer {
            keys: NonceKeys::Fixed(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
            lifetime: i64::try_from(lifetime_seconds).unwrap_or(i64::MAX),
        }
    }

    /// A key per epoch of `period_seconds` (at least the lifetime), shared through `shared`
    /// when given, else random per process.
    pub fn rotating(
        shared: Option<Arc<dyn SharedCache>>,
        period_seconds: u64,
        lifetime_seconds: u64,
    ) -> Self {
        let lifetime = i64::try_from(lifetime_seconds).unwrap_or(i64::MAX);
        NonceIssuer {
            keys: NonceKeys::Rotating(RotatingKeys {
                period: i64::try_from(period_seconds)
                    .unwrap_or(i64::MAX)
                    .max(lifetime)
                    .max(1),
                shared,
                held: std::sync::RwLock::new(Vec::new()),
            }),
            lifetime,
        }
    }

    /// Make sure the key of `now`'s epoch is held (rotating keys; a no-op for a fixed key).
    pub async fn ensure(&self, now: i64) -> Result<(), NonceKeyError> {
        match &self.keys {
            NonceKeys::Fixed(_) => Ok(()),
            // Boxed: only a key rotation reaches the shared store, and the callers' futures
            // (every DPoP check) need not carry room for its round trip.
            NonceKeys::Rotating(r) => Box::pin(r.ensure(now)).await,
        }
    }

    fn key_for(&self, issued: i64) -> Option<hmac::Key> {
        match &self.keys {
            NonceKeys::Fixed(k) => Some((**k).clone()),
            NonceKeys::Rotating(r) => r.key(r.epoch(issued)),
        }
    }

    /// A nonce issued at `now`; `None` when the key of `now`'s epoch is not held.
    pub fn issue(&self, now: i64) -> Option<String> {
        let key = self.key_for(now)?;
        let ts = now.to_be_bytes();
        let tag = hmac::sign(&key, &ts);
        let mut raw = ts.to_vec();
        raw.extend_from_slice(&tag.as_ref()[..16]);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    pub fn check(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 24 {
            return false;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = i64::from_be_bytes(ts);
        if after(issued, now, 1) || older_than(issued, now, self.lifetime) {
            return false;
        }
        let Some(key) = self.key_for(issued) else {
            return false;
        };
        let tag = hmac::sign(&key, &ts);
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..16], &raw[8..]).is_ok()
    }
}

/// Parsed DPoP keys (P-256 JWKs of exactly `kty`, `crv`, `x`, `y`: what clients send), by their
/// coordinates. A client proves with the same key on every request; parsing it (point
/// validation, RFC 7638 thumbprint) is a pure function of those four members, so a parsed key
/// is reused as is. Only keys that verified a proof bound to a verified token enter; the
/// memo is bounded and the oldest entry leaves first. Any other JWK shape is parsed every
/// time.
struct DpopKeyMemo {
    inner: std::sync::Mutex<DpopKeyMemoInner>,
}

#[derive(Default)]
struct DpopKeyMemoInner {
    map: std::collections::HashMap<MemoKey, Arc<Jwk>>,
    order: std::collections::VecDeque<MemoKey>,
}

/// Base64url characters of a P-256 coordinate (32 bytes, no padding).
const COORD_B64: usize = 43;

/// `x` then `y` of a remembered key, as the JWK spelt them.
type MemoKey = [u8; 2 * COORD_B64];

/// Most DPoP keys remembered.
const DPOP_KEY_MEMO_ENTRIES: usize = 16_384;

impl DpopKeyMemo {
    fn global() -> &'static DpopKeyMemo {
        static MEMO: std::sync::OnceLock<DpopKeyMemo> = std::sync::OnceLock::new();
        MEMO.get_or_init(|| DpopKeyMemo {
            inner: std::sync::Mutex::new(DpopKeyMemoInner::default()),
        })
    }

    /// The memo key of a JWK of the remembered shape: `x` and `y` exactly as sent, side by
    /// side. A P-256 coordinate is 32 bytes, 43 base64url characters; a JWK with other
    /// lengths is not remembered (its parse refuses it anyway).
    fn key(jwk: &StrictObject<'_>) -> Option<MemoKey> {
        if jwk.len() != 4 || jwk.str("kty")? != "EC" || jwk.str("crv")? != "P-256" {
            return None;
        }
        let (x, y) = (jwk.str("x")?.as_bytes(), jwk.str("y")?.as_bytes());
        if x.len() != COORD_B64 || y.len() != COORD_B64 {
            return None;
        }
        let mut k = [0u8; 2 * COORD_B64];
        k[..COORD_B64].copy_from_slice(x);
        k[COORD_B64..].copy_from_slice(y);
        Some(k)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DpopKeyMemoInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &MemoKey) -> Option<Arc<Jwk>> {
        self.lock().map.get(key).cloned()
    }

    fn put(&self, key: MemoKey, jwk: &Arc<Jwk>) {
        let mut g = self.lock();
        if g.map.contains_key(&key) {
            return;
        }
        while g.map.len() >= DPOP_KEY_MEMO_ENTRIES {
            match g.order.pop_front() {
                Some(old) => {
                    g.map.remove(&old);
                }
                None => break,
            }
        }
        g.order.push_back(key);
        g.map.insert(key, jwk.clone());
    }
}

/// DPoP proof validation.
pub struct DpopValidator {
    pub algs: Vec<Alg>,
    pub max_age: i64,
    pub skew: i64,
    pub replay: Arc<dyn ReplayCache>,
    pub nonce: Option<NonceIssuer>,
}

fn bad_proof(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidDpopProof, detail)
}

/// Do two URIs name the same resource for `htu` (RFC 9449 §4.3 item 9, RFC 3986 §6.2.2–3)?
pub(crate) fn same_target(htu: &url::Url, target: &url::Url) -> bool {
    htu.scheme() == target.scheme()
        && match (htu.host_str(), target.host_str()) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a.is_none() && b.is_none(),
        }
        && htu.port_or_known_default() == target.port_or_known_default()
        && htu.path() == target.path()
}

/// Is `htu` written as an absolute RFC 3986 URI with an authority (`scheme://host…`)? The URL
/// parser follows WHATWG, which repairs what RFC 3986 refuses — it drops leading and trailing
/// blanks and control characters and removes tabs and newlines anywhere, reads `\` as `/`,
/// accepts `https:host` without `//`, and maps non-ASCII hosts through IDNA — so a proof could
/// name the target in a spelling no other verifier would accept. Those spellings are refused
/// before parsing: only printable ASCII other than `\`, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`,
/// `}` (characters RFC 3986 never allows unencoded), and a scheme of `ALPHA *( ALPHA / DIGIT /
/// "+" / "-" / "." )` followed by `://`.
fn uri_syntax_ok(htu: &str) -> bool {
    let b = htu.as_bytes();
    let allowed = |c: u8| c.is_ascii_graphic() && !b"\\\"<>^`{|}".contains(&c);
    if !b.iter().all(|&c| allowed(c)) {
        return false;
    }
    let Some(colon) = b.iter().position(|&c| c == b':') else {
        return false;
    };
    let scheme = &b[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        && b[colon + 1..].starts_with(b"//")
}

/// WHATWG also reads hosts such as `0x7f.1` or `2130706433` as IPv4 addresses (RFC 3986 reads
/// them as names): an IPv4 host must be written in dotted decimal, as the parser prints it.
fn ipv4_as_written(htu: &str, parsed: &url::Url) -> bool {
    let Some(url::Host::Ipv4(ip)) = parsed.host() else {
        return true;
    };
    let rest = htu.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split_once(':').map_or(host_port, |(h, _)| h);
    host == ip.to_string()
}

/// [`same_target`] of `htu` parsed as a URL and `target`; `None` when `htu` is not one.
/// Each thread remembers the last `htu` it parsed (clients send the same one request after
/// request), so the parse — a pure function of the string — runs once per distinct value.
fn htu_matches(htu: &str, target: &url::Url) -> Option<bool> {
    thread_local! {
        static LAST_HTU: std::cell::RefCell<Option<(String, Option<url::Url>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST_HTU.with_borrow_mut(|last| {
        if last.as_ref().is_none_or(|(s, _)| s != htu) {
            let parsed = uri_syntax_ok(htu)
                .then(|| url::Url::parse(htu).ok())
                .flatten()
                .filter(|u| ipv4_as_written(htu, u));
            *last = Some((htu.to_string(), parsed));
        }
        let parsed = last.as_ref().and_then(|(_, u)| u.as_ref())?;
        Some(same_target(parsed, target))
    })
}

impl DpopValidator {
    pub fn algs_header(&self) -> String {
        self.algs
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A fresh nonce, when nonces are in use.
    pub fn fresh_nonce(&self) -> Option<String> {
        self.nonce.as_ref().and_then(|n| n.issue(now_unix()))
    }

    async fn validate(
        &self,
        req: &AuthRequest<'_>,
        // SHA-256 of the access token (`ath` is its base64url).
        access_token_sha256: &[u8; 32],
        jkt: &str,
        tenant: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let proof = match req.dpop.as_slice() {
            [] => return Err(bad_proof("the DPoP header is missing")),
            [one] => {
                std::str::from_utf8(one).map_err(|_| bad_proof("the DPoP header is not text"))?
            }
            _ => return Err(bad_proof("more than one DPoP header")),
        };
        // A borrowing strict parse: the decisions, order and messages of `Jws::parse` and
        // the `Value` tree it builds (tests: `auth_differential.rs`).
        let compact =
            CompactJws::split(proof).map_err(|e| bad_proof(format!("DPoP proof: {e}")))?;
        let jws = compact
            .parse()
            .map_err(|e| bad_proof(format!("DPoP proof: {e}")))?;
        if jws.header.str("typ") != Some("dpop+jwt") {
            return Err(bad_proof("DPoP proof `typ` must be `dpop+jwt`"));
        }
        if !self.algs.contains(&jws.alg) {
            return Err(bad_proof(format!(
                "DPoP proof algorithm {} is not accepted",
                jws.alg
            )));
        }
        let jwk_text = jws
            .header
            .text("jwk")
            .ok_or_else(|| bad_proof("DPoP proof header has no `jwk`"))?;
        let memo = StrictObject::parse(jwk_text.as_bytes())
            .as_ref()
            .and_then(DpopKeyMemo::key);
        let remembered = memo.as_ref().and_then(|k| DpopKeyMemo::global().get(k));
        let fresh = remembered.is_none();
        let jwk = match remembered {
            Some(j) => j,
            None => {
                // The member's own text, strictly parsed: the tree `Jws::parse` held for it.
                let value = stella_dsse::jcs::parse_strict(jwk_text.as_bytes())
                    .map_err(|_| bad_proof(format!("DPoP proof: {}", JoseError::Json("header"))))?;
                Arc::new(
                    Jwk::from_value(&value)
                        .map_err(|e| bad_proof(format!("DPoP proof `jwk`: {e}")))?,
                )
            }
        };
        jws.verify(&jwk)
            .map_err(|e| bad_proof(format!("DPoP proof: {e}")))?;
        let c = &jws.claims;
        let jti = c
            .str("jti")
            .ok_or_else(|| bad_proof("DPoP proof has no `jti`"))?;
        if jti.is_empty() || jti.len() > 256 {
            return Err(bad_proof("DPoP proof `jti` must be 1..=256 characters"));
        }
        if c.str("htm") != Some(req.method) {
            return Err(bad_proof(format!(
                "DPoP proof `htm` does not match the request method {}",
                req.method
            )));
        }
        let htu = c
            .str("htu")
            .ok_or_else(|| bad_proof("DPoP proof has no `htu`"))?;
        match htu_matches(htu, req.target) {
            None => return Err(bad_proof("DPoP proof `htu` is not a URI")),
            Some(false) => {
                return Err(bad_proof(format!(
                    "DPoP proof `htu` does not match the request URI {}",
                    req.target
                )))
            }
            Some(true) => {}
        }
        let iat = match c.get("iat") {
            Some(Scalar::Num(n)) => Some(Value::Number(n.clone())),
            _ => None,
        }
        .filter(|v| v.is_i64() || v.is_u64())
        .and_then(|v| numeric_date(&v))
        .ok_or_else(|| {
            bad_proof(format!(
                "DPoP proof has no integer `iat` in 0..={MAX_NUMERIC_DATE}"
            ))
        })?;
        if after(iat, now, self.skew) {
            return Err(bad_proof("DPoP proof `iat` is in the future"));
        }
        if older_than(iat, now, self.max_age) {
            return Err(bad_proof("DPoP proof is too old (`iat`)"));
        }
        let ath = c
            .str("ath")
            .ok_or_else(|| bad_proof("DPoP proof has no `ath`"))?;
        // base64url of the digest, on the stack (43 characters); no digest text: refused.
        let mut want_ath = [0u8; 43];
        let want_ath = URL_SAFE_NO_PAD
            .encode_slice(access_token_sha256, &mut want_ath)
            .ok()
            .and_then(|n| want_ath.get(..n));
        if want_ath != Some(ath.as_bytes()) {
            return Err(bad_proof(
                "DPoP proof `ath` does not match the access token",
            ));
        }
        if jwk.thumbprint() != jkt {
            return Err(bad_proof(
                "DPoP proof key does not match the token's `cnf.jkt`",
            ));
        }
        // A key that signed a valid proof for a verified token's `cnf.jkt`: remembered, so the
        // holder's next proofs skip parsing it.
        if let (Some(k), true) = (memo, fresh) {
            DpopKeyMemo::global().put(k, &jwk);
        }
        if let Some(n) = &self.nonce {
            // Rotating keys: the current epoch's key must be held (fail closed if it cannot
            // be had from the shared store).
            n.ensure(now).await.map_err(|e| {
                let mut err = ApiError::unavailable(
                    "the DPoP nonce key is unavailable; nothing was signed; retry later",
                    format!("{e}"),
                );
                err.retry_after = Some(1);
                err
            })?;
            let ok = c.str("nonce").is_some_and(|v| n.check(v, now));
            if !ok {
                let mut e = ApiError::new(Code::UseDpopNonce, "a fresh DPoP nonce is required");
                e.dpop_nonce = n.issue(now);
                return Err(e);
            }
        }
        let key = format!("{jkt}:{jti}");
        // iat is within [now - max_age, now + skew] here; saturate anyway.
        let expires = iat
            .max(now)
            .saturating_add(self.max_age)
            .saturating_add(self.skew);
        // Partitioned by tenant: one tenant's callers cannot fill the cache for all.
        match self
            .replay
            .check_and_insert_in(ReplayKey::new(tenant, &key), expires)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(bad_proof("DPoP proof `jti` was already used (replay)")),
            // Full or unreachable: refuse (fail closed) — a proof is never let through
            // unremembered.
            Err(e) => {
                let mut err = ApiError::unavailable(
                    "the replay cache cannot take this proof (full or unavailable); nothing was signed; retry later",
                    format!("replay cache: {e}"),
                );
                err.retry_after = Some(u64::try_from(self.max_age).unwrap_or(60).max(1));
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_round_trip_and_expiry() {
        let n = NonceIssuer::new(b"secret", 300);
        let v = n.issue(1000).unwrap();
        assert!(n.check(&v, 1000));
        assert!(n.check(&v, 1300));
        assert!(!n.check(&v, 1301));
        assert!(!NonceIssuer::new(b"other", 300).check(&v, 1000));
        assert!(!n.check("garbage", 1000));
    }

    #[test]
    fn token_cache_keys_match_only_whole_digests() {
        let k = [7u8; 32];
        assert!(TokenKey(k) == TokenKey(k));
        for i in [0, 15, 31] {
            let mut other = k;
            other[i] ^= 1;
            assert!(TokenKey(k) != TokenKey(other), "byte {i}");
        }
        let c = TokenCache::new(16);
        let claims = |exp| TokenClaims {
            exp,
            ..TokenClaims::default()
        };
        c.put(k, claims(100), None, 50);
        let mut last = k;
        last[31] = 0;
        assert!(c.get(&last).is_none());
        assert_eq!(c.get(&k).map(|(c, _)| c.exp), Some(100));
    }

    /// A hit shares the cached claims (one `Arc`), it does not copy them per request.
    #[test]
    fn token_cache_hits_share_the_claims() {
        let c = TokenCache::new(16);
        let claims = Arc::new(TokenClaims {
            sub: Some("alice".into()),
            scopes: vec!["signer.sign".into()],
            exp: 100,
            ..TokenClaims::default()
        });
        c.put([3; 32], Arc::clone(&claims), Some(40), 50);
        let (a, nbf) = c.get(&[3; 32]).unwrap();
        let (b, _) = c.get(&[3; 32]).unwrap();
        assert!(Arc::ptr_eq(&a, &claims) && Arc::ptr_eq(&a, &b));
        assert_eq!((a.sub.as_deref(), nbf), (Some("alice"), Some(40)));
        assert!(c.get(&[4; 32]).is_none());
    }

    #[test]
    fn token_cache_is_bounded_and_drops_expired_entries() {
        let c = TokenCache::new(16);
        let claims = |exp| TokenClaims {
            exp,
            ..TokenClaims::default()
        };
        c.put([1; 32], claims(100), None, 50);
        assert_eq!(c.get(&[1; 32]).unwrap().0.exp, 100);
        // Same shard (first byte), shard capacity 1: an expired entry makes room.
        c.put([1; 32], claims(100), None, 50);
        let mut k = [1; 32];
        k[1] = 2;
        c.put(k, claims(300), None, 200);
        assert!(c.get(&[1; 32]).is_none());
        assert!(c.get(&k).is_some());
    }

    /// Issue #8 ("tests that cannot do their job"): the test above never filled a shard with
    /// live entries, where the cache was cleared wholesale. Full of live entries, it now
    /// drops only the one that expires first.
    #[test]
    fn full_token_cache_evicts_the_earliest_expiry_not_everything() {
        let c = TokenCache::new(16 * 4); // 4 per shard
        let claims = |exp| TokenClaims {
            exp,
            ..TokenClaims::default()
        };
        let key = |i: u8| {
            let mut k = [7u8; 32]; // one shard
            k[1] = i;
            k
        };
        for (i, exp) in [(0u8, 500), (1, 300), (2, 900), (3, 700)] {
            c.put(key(i), claims(exp), None, 100);
        }
        // Re-putting a live key does not evict anyone.
        c.put(key(2), claims(900), None, 100);
        for i in 0..4 {
            assert!(c.get(&key(i)).is_some(), "{i}");
        }
        c.put(key(4), claims(800), None, 100);
        assert!(c.get(&key(1)).is_none(), "earliest expiry left");
        for i in [0u8, 2, 3, 4] {
            assert!(c.get(&key(i)).is_some(), "{i} kept");
        }
        // Many re-puts keep the bookkeeping bounded.
        for _ in 0..100 {
            c.put(key(0), claims(500), None, 100);
        }
        assert!(c.shard(&key(0)).by_exp.len() <= 8);
        c.put(key(5), claims(1000), None, 100);
        assert!(c.get(&key(0)).is_none());
        assert_eq!(c.shard(&key(0)).map.len(), 4);
    }

    #[test]
    fn numeric_dates_are_range_checked() {
        use serde_json::json;
        assert_eq!(numeric_date(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(1_700_000_000.9)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(0)), Some(0));
        assert_eq!(
            numeric_date(&json!(MAX_NUMERIC_DATE)),
            Some(MAX_NUMERIC_DATE)
        );
        for bad in [
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-1),
            json!(-0.5e10),
            json!(1e300),
            json!(MAX_NUMERIC_DATE + 1),
            json!("1700000000"),
            json!(null),
        ] {
            assert_eq!(numeric_date(&bad), None, "{bad}");
        }
    }

    #[test]
    fn window_checks_never_wrap() {
        let now = 1_700_000_000;
        assert!(older_than(i64::MIN, now, 60));
        assert!(older_than(i64::MIN, i64::MAX, i64::MAX));
        assert!(!older_than(now - 60, now, 60));
        assert!(older_than(now - 61, now, 60));
        assert!(after(i64::MAX, now, 5));
        assert!(after(now, i64::MAX, 1), "an overflowing limit refuses");
        assert!(!after(now + 5, now, 5));
        assert!(after(now + 6, now, 5));
        assert!(!after(i64::MIN, now, 5));
    }

    /// Rotating keys, one replica (RNG): a nonce is accepted within its lifetime across an
    /// epoch change, refused once its epoch key is dropped, and nothing is issued or accepted
    /// for an epoch whose key is not held.
    #[tokio::test]
    async fn rotating_nonce_keys() {
        let n = NonceIssuer::rotating(None, 100, 60);
        assert!(n.issue(1000).is_none(), "no key held yet");
        n.ensure(1000).await.unwrap();
        let v = n.issue(1050).unwrap();
        assert!(n.check(&v, 1050));
        // Last tenth of the epoch: the next key is fetched ahead.
        n.ensure(1095).await.unwrap();
        let next = n.issue(1100).unwrap();
        assert!(
            n.check(&v, 1105),
            "the previous epoch's nonce within its lifetime"
        );
        assert!(!n.check(&v, 1111), "past its lifetime");
        assert!(n.check(&next, 1100));
        n.ensure(1200).await.unwrap();
        n.ensure(1300).await.unwrap();
        // Epoch 10's key is gone: even a forged fresh timestamp in it cannot be checked.
        assert!(!n.check(&v, 1050));
        // A different process has other keys.
        let other = NonceIssuer::rotating(None, 100, 60);
        other.ensure(1300).await.unwrap();
        let mine = n.issue(1300).unwrap();
        assert!(n.check(&mine, 1300));
        assert!(!other.check(&mine, 1300));
    }

    #[test]
    fn nonce_with_extreme_timestamps_is_refused() {
        let n = NonceIssuer::new(b"secret", u64::MAX);
        for ts in [i64::MIN, i64::MAX, 1002] {
            let v = n.issue(ts).unwrap();
            assert!(!n.check(&v, 1000), "{ts}");
        }
        let v = n.issue(i64::MIN).unwrap();
        assert!(!n.check(&v, i64::MAX));
    }

    fn validator(max_age: i64) -> DpopValidator {
        DpopValidator {
            algs: vec![Alg::Es256],
            max_age,
            skew: 5,
            replay: Arc::new(stella_store::MemoryReplayCache::new(1000)),
            nonce: None,
        }
    }

    /// A `POST` to `target` with one DPoP `proof` and nothing else.
    fn dpop_post<'a>(target: &'a url::Url, proof: &'a str) -> AuthRequest<'a> {
        AuthRequest {
            method: "POST",
            target,
            authorization: None,
            dpop: vec![proof.as_bytes()],
            client_cert_sha256: None,
        }
    }

    /// Issue #8 item 4: `now - iat` overflowed for `iat = i64::MIN`, so the proof passed the
    /// freshness check (and could be replayed once its replay entry expired).
    #[tokio::test]
    async fn dpop_iat_at_the_integer_limits_is_refused() {
        use serde_json::json;
        let key = crate::client::DpopKey::generate().unwrap();
        let target = url::Url::parse("https://signer.test/api/v1/signer/sign/dsse").unwrap();
        let token = "access-token";
        let token_hash = stella_keys::sha256(token.as_bytes());
        let ath = URL_SAFE_NO_PAD.encode(token_hash);
        let now = now_unix();
        let v = validator(60);
        let check = |iat: Value| {
            let claims = json!({"jti": crate::trace::random_hex(8), "htm": "POST",
                "htu": target.as_str(), "iat": iat, "ath": ath});
            key.proof_with_claims(&claims).unwrap()
        };
        for iat in [
            json!(i64::MIN),
            json!(i64::MIN + 1),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-1),
            json!(1e300),
            json!(now as f64 + 0.5),
            json!(now - 61),
            json!(now + 6),
        ] {
            let proof = check(iat.clone());
            let req = dpop_post(&target, &proof);
            let e = v
                .validate(&req, &token_hash, key.thumbprint(), "t", now)
                .await
                .unwrap_err();
            assert_eq!(e.code, Code::InvalidDpopProof, "iat {iat}: {}", e.detail);
            assert!(e.detail.contains("iat"), "iat {iat}: {}", e.detail);
        }
        // The control: a fresh proof passes.
        let proof = check(json!(now));
        let req = dpop_post(&target, &proof);
        v.validate(&req, &token_hash, key.thumbprint(), "t", now)
            .await
            .unwrap();
    }

    /// Issue #15: parsed DPoP keys are remembered by their coordinates. A remembered key
    /// still has to verify every proof: a proof that carries a remembered key but is signed
    /// by another is refused, before and after the key was remembered.
    #[tokio::test]
    async fn remembered_dpop_keys_still_verify_every_proof() {
        use serde_json::json;
        let a = crate::client::DpopKey::generate().unwrap();
        let b = crate::client::DpopKey::generate().unwrap();
        let target = url::Url::parse("https://signer.test/api/v1/signer/sign/dsse").unwrap();
        let token_hash = stella_keys::sha256(b"access-token");
        let v = validator(60);
        let now = now_unix();
        let claims = || {
            json!({"jti": crate::trace::random_hex(8), "htm": "POST", "htu": target.as_str(),
                   "iat": now, "ath": URL_SAFE_NO_PAD.encode(token_hash)})
        };
        // B signs a proof that carries A's key.
        let forged = || {
            b.proof_with(
                &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": a.jwk()}),
                &claims(),
            )
            .unwrap()
        };
        let jkt = a.thumbprint().to_string();
        let check = |proof: String| {
            let (v, target, jkt) = (&v, &target, jkt.clone());
            async move {
                let req = dpop_post(target, &proof);
                v.validate(&req, &token_hash, &jkt, "t", now).await
            }
        };
        let e = check(forged()).await.unwrap_err();
        assert!(e.detail.contains("signature"), "{}", e.detail);
        assert!(DpopKeyMemo::global()
            .get(&memo_key(a.jwk()).unwrap())
            .is_none());
        for _ in 0..2 {
            check(a.proof_with_claims(&claims()).unwrap())
                .await
                .unwrap();
        }
        assert!(DpopKeyMemo::global()
            .get(&memo_key(a.jwk()).unwrap())
            .is_some());
        let e = check(forged()).await.unwrap_err();
        assert!(e.detail.contains("signature"), "{}", e.detail);
        // B's own valid proof: its key is not the token's `cnf.jkt`; not remembered.
        let e = check(b.proof_with_claims(&claims()).unwrap())
            .await
            .unwrap_err();
        assert!(e.detail.contains("cnf.jkt"), "{}", e.detail);
        assert!(DpopKeyMemo::global()
            .get(&memo_key(b.jwk()).unwrap())
            .is_none());
    }

    /// The memo key of a JWK given as a `Value`.
    fn memo_key(jwk: &Value) -> Option<MemoKey> {
        let text = jwk.to_string();
        StrictObject::parse(text.as_bytes())
            .as_ref()
            .and_then(DpopKeyMemo::key)
    }

    #[test]
    fn dpop_key_memo_takes_only_the_plain_p256_shape() {
        use serde_json::json;
        let k = crate::client::DpopKey::generate().unwrap();
        let jwk = k.jwk().clone();
        assert!(memo_key(&jwk).is_some());
        for (member, value) in [
            ("kid", json!("k1")),
            ("alg", json!("ES256")),
            ("d", json!("AAAA")),
        ] {
            let mut other = jwk.clone();
            other[member] = value;
            assert!(memo_key(&other).is_none(), "{member}");
        }
        let mut curve = jwk.clone();
        curve["crv"] = json!("P-384");
        assert!(memo_key(&curve).is_none());
        let mut kty = jwk;
        kty["kty"] = json!("OKP");
        assert!(memo_key(&kty).is_none());
    }

    #[test]
    fn htu_comparison_normalises() {
        let t = url::Url::parse("https://Signer.example:443/api/v1/signer/sign/dsse").unwrap();
        let h = url::Url::parse("https://signer.example/api/v1/signer/sign/dsse?x=1").unwrap();
        assert!(same_target(&h, &t));
        let other = url::Url::parse("https://signer.example/api/v1/signer/sign/export").unwrap();
        assert!(!same_target(&other, &t));
        let http = url::Url::parse("http://signer.example/api/v1/signer/sign/dsse").unwrap();
        assert!(!same_target(&http, &t));
    }

    /// WHATWG repairs (blanks, tabs, backslashes, a missing `//`, non-ASCII) are refused, so
    /// `htu` matches only when it is written as a URI; spellings RFC 3986 §6.2.2 normalises
    /// (scheme and host case, default port, query) still match.
    #[test]
    fn htu_must_be_written_as_an_rfc3986_uri() {
        let t = url::Url::parse("https://signer.example/api/v1/signer/sign/dsse").unwrap();
        for ok in [
            "https://signer.example/api/v1/signer/sign/dsse",
            "HTTPS://SIGNER.example:443/api/v1/signer/sign/dsse",
            "https://signer.example/api/v1/signer/sign/dsse?x=1#f",
        ] {
            assert_eq!(htu_matches(ok, &t), Some(true), "{ok}");
        }
        for bad in [
            " https://signer.example/api/v1/signer/sign/dsse",
            "https://signer.example/api/v1/signer/sign/dsse ",
            "https://signer.example/api/v1/signer/sign/dsse\n",
            "https://signer.example/api/v1/signer/sign/d\tsse",
            "\u{0}https://signer.example/api/v1/signer/sign/dsse",
            "https:\\\\signer.example\\api\\v1\\signer\\sign\\dsse",
            "https:signer.example/api/v1/signer/sign/dsse",
            "https:/signer.example/api/v1/signer/sign/dsse",
            "https://signer.example/api/v1/signer/sign/dsse\u{a0}",
            "https://sıgner.example/api/v1/signer/sign/dsse",
            "https://signer.example/api/v1/signer/sign/{dsse}",
            "1https://signer.example/api/v1/signer/sign/dsse",
            "//signer.example/api/v1/signer/sign/dsse",
            "",
        ] {
            assert_eq!(htu_matches(bad, &t), None, "{bad:?}");
        }
        let t = url::Url::parse("https://127.0.0.1:8443/api/v1/signer/sign/dsse").unwrap();
        assert_eq!(
            htu_matches("https://127.0.0.1:8443/api/v1/signer/sign/dsse", &t),
            Some(true)
        );
        for bad in [
            "https://0x7f.1:8443/api/v1/signer/sign/dsse",
            "https://2130706433:8443/api/v1/signer/sign/dsse",
            "https://0177.0.0.1:8443/api/v1/signer/sign/dsse",
            "https://127.1:8443/api/v1/signer/sign/dsse",
        ] {
            assert_eq!(htu_matches(bad, &t), None, "{bad:?}");
        }
        // The memo holds the refusal too: the same bad value again, then a good one.
        assert_eq!(htu_matches(" https://signer.example/", &t), None);
        assert_eq!(htu_matches(" https://signer.example/", &t), None);
        assert_eq!(
            htu_matches("https://127.0.0.1:8443/api/v1/signer/sign/dsse", &t),
            Some(true)
        );
    }
}

#[cfg(test)]
#[path = "auth_differential.rs"]
mod differential;
