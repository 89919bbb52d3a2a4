//! Signed checkpoints of the audit chain head, kept outside the database.
//!
//! A hash chain proves the order and content of what is there, not that nothing was cut off
//! its end or that the whole log was not replaced. The service therefore signs, periodically
//! and at shutdown, a small statement of the head — `records` (the head `seq`), `headHash` and
//! `time` — as a DSSE envelope (payload type [`PAYLOAD_TYPE`], canonical JSON payload) with a
//! configured audit key, and writes it atomically (temporary file, fsync, rename, fsync of the
//! folder) to a file outside the database. `stella audit verify` checks the envelope with the
//! configured public key (or keyring) and then walks the chain anchored to it
//! ([`crate::chain::ChainWalker::anchor`]): a log that ends before the checkpoint, or holds
//! another link at its position, fails; a log that has grown past it is fine.
//!
//! A checkpoint never runs ahead of what is durable: it is taken from
//! [`crate::AuditLog::head`], which reports committed links only. The writer also never moves
//! a checkpoint backwards: at start it reads the existing file, verifies it with its own
//! public key and refuses to continue when the log is behind it ([`Checkpointer::open`]), so a
//! log truncated while the service was down is not silently re-anchored.
//!
//! What this does not defend: an attacker who can write the checkpoint file can put back an
//! *older* validly signed checkpoint (a rollback) and then cut the log down to it. Copy
//! checkpoints to storage the database host cannot rewrite (another host, WORM storage, a
//! transparency log) when that matters; `docs/signer.md` says so.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use stella_dsse::Envelope;
use stella_keys::{Keyring, Policy, Signer, TrustedKey};

use crate::audit::Appended;
use crate::chain::GENESIS;

/// DSSE payload type of a checkpoint.
pub const PAYLOAD_TYPE: &str = "application/vnd.stella.audit-checkpoint.v1+json";

/// The `type` field of the payload.
pub(crate) const CHECKPOINT_TYPE: &str = "stella.audit.checkpoint/v1";

/// Largest checkpoint file read (a checkpoint is a few hundred bytes).
const MAX_FILE: u64 = 64 * 1024;

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    #[serde(rename = "type")]
    pub kind: String,
    /// The backend that wrote the log (`sqlite`, `postgres`).
    pub backend: String,
    /// Records in the log at the time (= the head `seq`).
    pub records: u64,
    /// Hash of link `records` (the genesis hash of 64 zeros for an empty log).
    pub head_hash: String,
    /// When the checkpoint was taken, RFC 3339 UTC.
    pub time: String,
}

/// Why a checkpoint could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is missing (deleted?): the log cannot be checked for truncation")]
    Missing { path: PathBuf },
    #[error("checkpoint {path} is not a DSSE envelope: {reason}")]
    Envelope { path: PathBuf, reason: String },
    #[error("checkpoint {path}: signature not accepted: {source}")]
    Signature {
        path: PathBuf,
        #[source]
        source: stella_keys::VerifyError,
    },
    #[error("checkpoint {path}: invalid payload: {reason}")]
    Payload { path: PathBuf, reason: String },
    #[error("signing the checkpoint: {0}")]
    Sign(#[from] stella_keys::SignError),
    #[error("checkpoint {path} covers {checkpoint_seq} record(s) with head {checkpoint_hash}, but the log's head is seq {head_seq} hash {head_hash}: the log was truncated or replaced (run `stella audit verify`; move the checkpoint away only after investigating)")]
    Behind {
        path: PathBuf,
        checkpoint_seq: u64,
        checkpoint_hash: String,
        head_seq: u64,
        head_hash: String,
    },
}

fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

impl Checkpoint {
    /// A checkpoint of `head`, taken now.
    pub fn of(backend: &str, head: &Appended) -> Self {
        Checkpoint {
            kind: CHECKPOINT_TYPE.into(),
            backend: backend.into(),
            records: head.seq,
            head_hash: head.hash.clone(),
            time: now_rfc3339(),
        }
    }

    /// Sign as a DSSE envelope.
    pub fn sign(&self, signer: &dyn Signer) -> Result<Envelope, CheckpointError> {
        let payload = stella_dsse::jcs::to_vec(self)
            .map_err(|e| stella_keys::SignError::Statement(e.to_string()))?;
        Ok(stella_keys::sign_envelope(
            PAYLOAD_TYPE,
            payload,
            &[signer],
        )?)
    }

    fn check(self, path: &Path) -> Result<Self, CheckpointError> {
        let bad = |reason: String| CheckpointError::Payload {
            path: path.to_path_buf(),
            reason,
        };
        if self.kind != CHECKPOINT_TYPE {
            return Err(bad(format!(
                "type {:?}, expected {CHECKPOINT_TYPE:?}",
                self.kind
            )));
        }
        let hex =
            |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(&self.head_hash) {
            return Err(bad("headHash is not 64 lowercase hex digits".into()));
        }
        if self.records == 0 && self.head_hash != GENESIS {
            return Err(bad(
                "an empty log's headHash must be the genesis hash".into()
            ));
        }
        Ok(self)
    }
}

/// Read `path` and verify it against `keyring` (payload type pinned, one trusted signature).
pub fn read_verified(path: &Path, keyring: &Keyring) -> Result<Checkpoint, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_FILE {
        return Err(CheckpointError::Envelope {
            path: path.to_path_buf(),
            reason: format!("{} bytes, more than a checkpoint ever holds", meta.len()),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let env = Envelope::from_json(&bytes).map_err(|e| CheckpointError::Envelope {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    stella_keys::verify_envelope(&env, keyring, &Policy::new(1).payload_type(PAYLOAD_TYPE))
        .map_err(|source| CheckpointError::Signature {
            path: path.to_path_buf(),
            source,
        })?;
    let cp: Checkpoint =
        serde_json::from_slice(&env.payload).map_err(|e| CheckpointError::Payload {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    cp.check(path)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename
/// over `path`, fsync of the folder. A reader sees the old or the new file, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let mut rnd = [0u8; 8];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| io(std::io::Error::other("RNG failure")))?;
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io)
}

/// Writes checkpoints of one log; never backwards.
pub struct Checkpointer {
    signer: Arc<dyn Signer>,
    path: PathBuf,
    backend: &'static str,
    /// The last head written (or found valid at open).
    last: Mutex<Option<Appended>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("path", &self.path)
            .field("key_id", &self.signer.key_id().as_str())
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Start checkpointing a log whose durable head is `head`. An existing checkpoint at
    /// `path` must verify with `signer`'s public key and must not be ahead of `head` (nor name
    /// another link at the same position); otherwise [`CheckpointError::Behind`] (or the
    /// verification error) and nothing is written.
    pub fn open(
        signer: Arc<dyn Signer>,
        path: PathBuf,
        backend: &'static str,
        head: &Appended,
    ) -> Result<Self, CheckpointError> {
        let keyring = Keyring::new(vec![TrustedKey::unrestricted(signer.public_key().clone())])
            .map_err(|e| CheckpointError::Payload {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match read_verified(&path, &keyring) {
            Ok(cp) => {
                if cp.records > head.seq || (cp.records == head.seq && cp.head_hash != head.hash) {
                    return Err(CheckpointError::Behind {
                        path,
                        checkpoint_seq: cp.records,
                        checkpoint_hash: cp.head_hash,
                        head_seq: head.seq,
                        head_hash: head.hash.clone(),
                    });
                }
            }
            Err(CheckpointError::Missing { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Checkpointer {
            signer,
            path,
            backend,
            last: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sign and write a checkpoint of `head` unless it is the head last written or behind it.
    /// Returns whether a file was written.
    pub fn write(&self, head: &Appended) -> Result<bool, CheckpointError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = last.as_ref() {
            if head.seq <= l.seq {
                return Ok(false);
            }
        }
        let env = Checkpoint::of(self.backend, head).sign(self.signer.as_ref())?;
        write_atomic(&self.path, &env.to_json())?;
        *last = Some(head.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_keys::{Algorithm, FileKey};

    fn head(seq: u64, hash: &str) -> Appended {
        Appended {
            seq,
            hash: hash.to_string(),
        }
    }

    fn ring(s: &dyn Signer) -> Keyring {
        Keyring::new(vec![TrustedKey::unrestricted(s.public_key().clone())]).unwrap()
    }

    #[test]
    fn written_checkpoints_verify_and_never_go_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp").join("audit.checkpoint.json");
        let key: Arc<dyn Signer> = Arc::new(FileKey::generate(Algorithm::Ed25519).unwrap());
        let cp =
            Checkpointer::open(key.clone(), path.clone(), "sqlite", &head(0, GENESIS)).unwrap();
        assert!(cp.write(&head(0, GENESIS)).unwrap());
        let h = "ab".repeat(32);
        assert!(cp.write(&head(5, &h)).unwrap());
        assert!(!cp.write(&head(5, &h)).unwrap());
        assert!(!cp.write(&head(3, &"cd".repeat(32))).unwrap());
        let read = read_verified(&path, &ring(key.as_ref())).unwrap();
        assert_eq!((read.records, read.head_hash.as_str()), (5, h.as_str()));
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Reopening with the log behind the checkpoint is refused.
        let e = Checkpointer::open(key.clone(), path.clone(), "sqlite", &head(4, &h)).unwrap_err();
        assert!(
            matches!(
                e,
                CheckpointError::Behind {
                    checkpoint_seq: 5,
                    head_seq: 4,
                    ..
                }
            ),
            "{e}"
        );
        let e = Checkpointer::open(
            key.clone(),
            path.clone(),
            "sqlite",
            &head(5, &"ee".repeat(32)),
        )
        .unwrap_err();
        assert!(matches!(e, CheckpointError::Behind { .. }), "{e}");
        assert!(Checkpointer::open(key, path, "sqlite", &head(6, &"ee".repeat(32))).is_ok());
    }

    #[test]
    fn forged_or_foreign_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.checkpoint.json");
        let key = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let other = FileKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let cp = Checkpoint::of("sqlite", &head(7, &"ab".repeat(32)));
        // Signed by another key.
        write_atomic(&path, &cp.sign(&other).unwrap().to_json()).unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Signature { .. })
        ));
        // Payload changed after signing.
        let mut env = cp.sign(&key).unwrap();
        env.payload = String::from_utf8(env.payload)
            .unwrap()
            .replace("\"records\":7", "\"records\":2")
            .into_bytes();
        write_atomic(&path, &env.to_json()).unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Signature { .. })
        ));
        // Another payload type signed by the right key (cross-protocol use).
        let payload = stella_dsse::jcs::to_vec(&cp).unwrap();
        let env =
            stella_keys::sign_envelope("application/vnd.in-toto+json", payload, &[&key]).unwrap();
        write_atomic(&path, &env.to_json()).unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Signature { .. })
        ));
        // Not an envelope; missing.
        write_atomic(&path, b"{}").unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Envelope { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Missing { .. })
        ));
        // A valid signature over a malformed statement.
        let mut bad = cp.clone();
        bad.head_hash = "XYZ".into();
        write_atomic(&path, &bad.sign(&key).unwrap().to_json()).unwrap();
        assert!(matches!(
            read_verified(&path, &ring(&key)),
            Err(CheckpointError::Payload { .. })
        ));
        let good = cp.sign(&key).unwrap();
        write_atomic(&path, &good.to_json()).unwrap();
        assert_eq!(read_verified(&path, &ring(&key)).unwrap(), cp);
    }
}
