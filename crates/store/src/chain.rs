//! The audit hash chain, independent of the backend.
//!
//! Link `n` (1-based) stores `prev_hash` = hash of link `n-1` (64 zeros for link 1) and
//! `hash = SHA-256("stella-audit-v1\n" || n || "\n" || prev_hash || "\n" || record_json)`,
//! where `record_json` is the record's canonical JSON exactly as stored. Binding the position
//! and the previous hash into every link means that an edited record (its hash no longer
//! matches), an inserted or deleted record (a gap in `seq`, or a `prev_hash` that no longer
//! names the link before it) and reordering are all detected by walking the chain once.
//!
//! Backends also keep some record fields in their own columns (`time` for time-range
//! queries such as `stella audit export --since`, `audit_id`). The hash covers them through the
//! record JSON, and the walker refuses any link whose column differs from the field in its
//! hashed JSON ([`ChainError::Column`]), so a query cannot be steered by an edited column.
//!
//! What a chain cannot prove on its own is that nothing was cut off its *end* (or that the
//! whole log was not replaced, or every link recomputed after an edit). That is what signed
//! checkpoints of the head are for ([`crate::checkpoint`]): the walker is given the
//! checkpoint's `(records, head hash)` as an anchor ([`ChainWalker::anchor`]) and fails when
//! the log ends before it ([`ChainError::Truncated`]) or holds another link at that position
//! ([`ChainError::CheckpointMismatch`]). A log that has grown past its checkpoint is fine.
//! `stella audit verify --expect-head` remains for heads anchored by other means.

use crate::audit::{AuditReader, AuditRecord, StoredRecord};
use crate::StoreError;

/// `prev_hash` of the first link.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of link `seq`.
pub(crate) fn link_hash(seq: u64, prev_hash: &str, record_json: &[u8]) -> String {
    let mut digits = [0u8; 20];
    stella_digest::Digest::of_parts(&[
        b"stella-audit-v1\n",
        decimal(seq, &mut digits),
        b"\n",
        prev_hash.as_bytes(),
        b"\n",
        record_json,
    ])
    .hex()
}

/// `n` in decimal (what `n.to_string()` gives), written into `buf` without an allocation.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// One thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("seq {seq}: record was edited (its hash does not match its content)")]
    Edited { seq: u64 },
    #[error("seq {seq}: the chain is broken before this record (a record was inserted, deleted or reordered)")]
    Broken { seq: u64 },
    #[error("seq {seq}: expected seq {expected}: {missing} record(s) missing (deleted)")]
    Gap {
        seq: u64,
        expected: u64,
        missing: u64,
    },
    #[error("seq {seq}: stored record is not a valid audit record: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error("head is seq {seq} hash {hash}, expected {expected} (records cut off or rewritten)")]
    HeadMismatch {
        seq: u64,
        hash: String,
        expected: String,
    },
    #[error("seq {seq}: the stored `{column}` column differs from the record's hashed `{column}` (edited column)")]
    Column { seq: u64, column: &'static str },
    #[error("the log ends at seq {head_seq} but the signed checkpoint covers {checkpoint_seq} record(s): the newest records were deleted or the log was replaced")]
    Truncated { head_seq: u64, checkpoint_seq: u64 },
    #[error("seq {seq}: link hash {hash} differs from the signed checkpoint's {expected} (the log was rewritten or replaced)")]
    CheckpointMismatch {
        seq: u64,
        hash: String,
        expected: String,
    },
}

/// The result of walking a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Records walked.
    pub records: u64,
    /// Last `seq` seen (0 for an empty log).
    pub head_seq: u64,
    /// Hash of the last link (the genesis hash of 64 zeros for an empty log).
    pub head_hash: String,
    /// Everything found wrong, in chain order (at most 100).
    pub problems: Vec<ChainError>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Stop collecting problems after this many (a wholesale rewrite would otherwise list every
/// record).
pub(crate) const MAX_PROBLEMS: usize = 100;

/// Walks links one at a time; usable by any reader.
#[derive(Debug)]
pub struct ChainWalker {
    report: ChainReport,
    expected_seq: u64,
    /// `(seq, hash)` a signed checkpoint vouches for.
    anchor: Option<(u64, String)>,
}

impl Default for ChainWalker {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainWalker {
    pub fn new() -> Self {
        ChainWalker {
            report: ChainReport {
                head_hash: GENESIS.to_string(),
                ..ChainReport::default()
            },
            expected_seq: 1,
            anchor: None,
        }
    }

    /// Require the link at `seq` to have `hash` and the log to reach `seq` (a signed
    /// checkpoint's `records` and `headHash`; `seq` 0 is the empty log and always holds).
    pub fn anchor(mut self, seq: u64, hash: &str) -> Self {
        self.anchor = (seq > 0).then(|| (seq, hash.to_string()));
        self
    }

    fn problem(&mut self, p: ChainError) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(p);
        }
    }

    /// Check the next stored link.
    pub fn push(&mut self, rec: &StoredRecord) {
        let seq = rec.seq;
        if seq != self.expected_seq {
            if seq > self.expected_seq {
                self.problem(ChainError::Gap {
                    seq,
                    expected: self.expected_seq,
                    missing: seq - self.expected_seq,
                });
            } else {
                self.problem(ChainError::Broken { seq });
            }
        } else if rec.prev_hash != self.report.head_hash {
            self.problem(ChainError::Broken { seq });
        }
        if link_hash(seq, &rec.prev_hash, rec.record_json.as_bytes()) != rec.hash {
            self.problem(ChainError::Edited { seq });
        } else {
            match serde_json::from_str::<AuditRecord>(&rec.record_json) {
                Err(e) => self.problem(ChainError::Unreadable {
                    seq,
                    reason: e.to_string(),
                }),
                Ok(parsed) => {
                    if parsed.time != rec.time {
                        self.problem(ChainError::Column {
                            seq,
                            column: "time",
                        });
                    }
                    if parsed.audit_id != rec.audit_id {
                        self.problem(ChainError::Column {
                            seq,
                            column: "audit_id",
                        });
                    }
                }
            }
        }
        if let Some((a_seq, a_hash)) = &self.anchor {
            if *a_seq == seq && *a_hash != rec.hash {
                let p = ChainError::CheckpointMismatch {
                    seq,
                    hash: rec.hash.clone(),
                    expected: a_hash.clone(),
                };
                self.problem(p);
            }
        }
        self.report.records += 1;
        self.report.head_seq = seq;
        self.report.head_hash = rec.hash.clone();
        self.expected_seq = seq + 1;
    }

    pub fn finish(mut self) -> ChainReport {
        if let Some((a_seq, _)) = &self.anchor {
            if self.report.head_seq < *a_seq {
                let p = ChainError::Truncated {
                    head_seq: self.report.head_seq,
                    checkpoint_seq: *a_seq,
                };
                // Always reported, even past MAX_PROBLEMS: it is the finding that matters.
                self.report.problems.push(p);
            }
        }
        self.report
    }
}

/// Walk a whole log from the start.
pub fn verify(reader: &dyn AuditReader) -> Result<ChainReport, StoreError> {
    verify_with(reader, ChainWalker::new())
}

/// Walk a whole log from the start with a prepared walker (e.g. [`ChainWalker::anchor`]ed
/// to a checkpoint).
pub fn verify_with(
    reader: &dyn AuditReader,
    mut walker: ChainWalker,
) -> Result<ChainReport, StoreError> {
    let mut after = 0;
    loop {
        let page = reader.read_after(after, 2048)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for rec in &page {
            walker.push(rec);
        }
    }
    Ok(walker.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, prev: &str, json: &str) -> StoredRecord {
        let parsed: Option<AuditRecord> = serde_json::from_str(json).ok();
        StoredRecord {
            seq,
            time: parsed.as_ref().map(|r| r.time.clone()).unwrap_or_default(),
            audit_id: parsed.map(|r| r.audit_id).unwrap_or_default(),
            record_json: json.to_string(),
            prev_hash: prev.to_string(),
            hash: link_hash(seq, prev, json.as_bytes()),
        }
    }

    fn walk_anchored(recs: &[StoredRecord], seq: u64, hash: &str) -> ChainReport {
        let mut w = ChainWalker::new().anchor(seq, hash);
        for r in recs {
            w.push(r);
        }
        w.finish()
    }

    #[test]
    fn edited_time_column_is_detected() {
        type Edit = fn(&mut StoredRecord);
        let edits: [(usize, &'static str, Edit); 2] = [
            (1, "time", |r| r.time = "2020-01-01T00:00:00.000Z".into()),
            (2, "audit_id", |r| r.audit_id = "other".into()),
        ];
        for (i, column, edit) in edits {
            let mut recs = sample(3);
            edit(&mut recs[i]);
            assert_eq!(
                walk(&recs).problems,
                vec![ChainError::Column {
                    seq: i as u64 + 1,
                    column
                }]
            );
        }
    }

    #[test]
    fn anchor_detects_truncation_and_rewrites_but_allows_growth() {
        let recs = sample(5);
        let h3 = recs[2].hash.clone();
        // Grown past the checkpoint: fine.
        assert!(walk_anchored(&recs, 3, &h3).is_intact());
        // The newest records cut off below the checkpoint.
        assert_eq!(
            walk_anchored(&recs[..2], 3, &h3).problems,
            vec![ChainError::Truncated {
                head_seq: 2,
                checkpoint_seq: 3
            }]
        );
        // An empty log against a non-empty checkpoint.
        assert!(!walk_anchored(&[], 3, &h3).is_intact());
        // Another chain of the same length (a replaced log).
        let other = sample(3)
            .into_iter()
            .map(|mut r| {
                r.record_json = r.record_json.replace("\"t\"", "\"u\"");
                r
            })
            .collect::<Vec<_>>();
        let mut prev = GENESIS.to_string();
        let other: Vec<StoredRecord> = other
            .into_iter()
            .map(|r| {
                let s = rec(r.seq, &prev, &r.record_json);
                prev = s.hash.clone();
                s
            })
            .collect();
        let p = walk_anchored(&other, 3, &h3).problems;
        assert!(
            matches!(
                p.as_slice(),
                [ChainError::CheckpointMismatch { seq: 3, .. }]
            ),
            "{p:?}"
        );
        // Seq 0 (an empty log's checkpoint) holds for any log.
        assert!(walk_anchored(&recs, 0, GENESIS).is_intact());
    }

    fn sample(n: u64) -> Vec<StoredRecord> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let mut r = AuditRecord::new(
                format!("a{seq}"),
                "t".into(),
                "r".into(),
                "2026-01-01T00:00:00.000Z".into(),
            );
            r.status = 200;
            let json = String::from_utf8(r.to_canonical_json().unwrap()).unwrap();
            let s = rec(seq, &prev, &json);
            prev = s.hash.clone();
            out.push(s);
        }
        out
    }

    fn walk(recs: &[StoredRecord]) -> ChainReport {
        let mut w = ChainWalker::new();
        for r in recs {
            w.push(r);
        }
        w.finish()
    }

    /// The link hash as first written (`seq.to_string()`), for the identity test below.
    fn link_hash_v1(seq: u64, prev_hash: &str, record_json: &[u8]) -> String {
        stella_digest::Digest::of_parts(&[
            b"stella-audit-v1\n",
            seq.to_string().as_bytes(),
            b"\n",
            prev_hash.as_bytes(),
            b"\n",
            record_json,
        ])
        .hex()
    }

    #[test]
    fn link_hash_is_the_first_formula() {
        let mut seqs: Vec<u64> = (0..=1000).collect();
        for p in 1..20 {
            let t = 10u64.pow(p);
            seqs.extend([t - 1, t, t + 1]);
        }
        seqs.extend([u64::MAX - 1, u64::MAX, 1 << 53, 123_456_789]);
        for seq in seqs {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(seq, &mut buf), seq.to_string().as_bytes());
            for json in [&b""[..], b"{}", br#"{"a":"\u00e9"}"#] {
                assert_eq!(
                    link_hash(seq, GENESIS, json),
                    link_hash_v1(seq, GENESIS, json)
                );
            }
        }
        // A known link: pinned bytes, not only the two formulas against each other.
        assert_eq!(
            link_hash(1, GENESIS, b"{}"),
            stella_digest::Digest::of(format!("stella-audit-v1\n1\n{GENESIS}\n{{}}").as_bytes())
                .hex()
        );
    }

    #[test]
    fn intact_chain_verifies() {
        let r = walk(&sample(5));
        assert!(r.is_intact(), "{:?}", r.problems);
        assert_eq!((r.records, r.head_seq), (5, 5));
    }

    #[test]
    fn edit_is_detected() {
        let mut recs = sample(4);
        recs[1].record_json = recs[1].record_json.replace("a2", "a9");
        assert_eq!(walk(&recs).problems, vec![ChainError::Edited { seq: 2 }]);
    }

    #[test]
    fn edit_with_recomputed_hash_breaks_the_next_link() {
        let mut recs = sample(4);
        recs[1].record_json = recs[1].record_json.replace("a2", "a9");
        recs[1].audit_id = "a9".into();
        recs[1].hash = link_hash(2, &recs[1].prev_hash, recs[1].record_json.as_bytes());
        assert_eq!(walk(&recs).problems, vec![ChainError::Broken { seq: 3 }]);
    }

    #[test]
    fn deletion_is_detected() {
        let mut recs = sample(4);
        recs.remove(1);
        let p = walk(&recs).problems;
        assert!(
            matches!(
                p[0],
                ChainError::Gap {
                    seq: 3,
                    missing: 1,
                    ..
                }
            ),
            "{p:?}"
        );
    }

    #[test]
    fn deleting_the_first_record_is_detected() {
        let mut recs = sample(3);
        recs.remove(0);
        assert!(!walk(&recs).is_intact());
    }

    #[test]
    fn insertion_is_detected() {
        let mut recs = sample(3);
        let forged = rec(2, GENESIS, "{}");
        recs.insert(1, forged);
        assert!(!walk(&recs).is_intact());
    }
}
