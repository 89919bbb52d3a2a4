//! Replay cache when full (issue #8 item 10): the in-memory cache of `stella-store` against
//! the design it replaced — a sharded map that, when a shard was full, scanned it (`retain`)
//! under the shard lock on every insert. Both are filled with live entries, then measured
//! side by side in one run:
//! - `full`: inserts of new keys while every entry is live (each one refused);
//! - `churn`: a steady stream of new keys where the oldest entries keep expiring (the cache
//!   sits at capacity; every insert must find room).
//!
//! `cargo bench -p stella-signer --bench replay [-- ENTRIES]` (default 400 000).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::time::Instant;

use stella_store::{MemoryReplayCache, ReplayCache, ReplayKey};

const SHARDS: usize = 16;

/// The replaced design, reproduced for comparison.
struct ScanOnFull {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<String, i64>>>,
    per_shard_max: usize,
}

impl ScanOnFull {
    fn new(max: usize) -> Self {
        ScanOnFull {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard_max: (max / SHARDS).max(16),
        }
    }

    fn insert_at(&self, key: &str, exp: i64, now: i64) -> Result<bool, ()> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut shard = self.shards[i].lock().unwrap();
        if let Some(e) = shard.get(key) {
            if *e > now {
                return Ok(false);
            }
        }
        if shard.len() >= self.per_shard_max {
            shard.retain(|_, e| *e > now);
            if shard.len() >= self.per_shard_max {
                return Err(());
            }
        }
        shard.insert(key.to_string(), exp);
        Ok(true)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    let entries: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // Fill both: the new one to its exact bound, the old one until every shard refuses.
    let new = MemoryReplayCache::new(entries);
    let old = ScanOnFull::new(entries);
    let far = now + 3600;
    rt.block_on(async {
        let mut i = 0usize;
        while new
            .check_and_insert_in(ReplayKey::new("t", &format!("fill{i}")), far)
            .await
            .is_ok()
        {
            i += 1;
        }
    });
    // Every shard is full once 500 new keys in a row are refused.
    let mut refused_in_a_row = 0;
    let mut i = 0usize;
    while refused_in_a_row < 500 {
        if old.insert_at(&format!("fill{i}"), far, now).is_err() {
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
        }
        i += 1;
    }

    // `full`: new keys against live entries.
    let n = 2000;
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            assert!(new
                .check_and_insert_in(ReplayKey::new("t", &format!("x{i}")), far)
                .await
                .is_err());
        }
    });
    let new_full = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for i in 0..n {
        assert!(old.insert_at(&format!("x{i}"), far, now).is_err());
    }
    let old_full = rate(n, t.elapsed().as_secs_f64());

    // `churn`: caches at capacity whose entries expire one per second of a simulated
    // clock; every insert of a new key must find room.
    let churn_new = MemoryReplayCache::new(entries);
    let churn_old = ScanOnFull::new(entries);
    for i in 0..entries {
        churn_new
            .check_and_insert_at(ReplayKey::new("t", &format!("c{i}")), i as i64, -1)
            .unwrap();
        let _ = churn_old.insert_at(&format!("c{i}"), i as i64, -1);
    }
    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        churn_new
            .check_and_insert_at(
                ReplayKey::new("t", &format!("d{i}")),
                (entries + i) as i64,
                i as i64,
            )
            .unwrap();
    }
    let new_churn = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for i in 0..n {
        let _ = churn_old.insert_at(&format!("d{i}"), (entries + i) as i64, i as i64);
    }
    let old_churn = rate(n, t.elapsed().as_secs_f64());

    println!("replay cache, {entries} entries, {SHARDS} shards (inserts/s, one thread):");
    println!(
        "  full of live entries:  new {new_full:>12.0}   scan-on-full {old_full:>10.0}   ratio {:.0}x",
        new_full / old_full
    );
    println!(
        "  at capacity, churning: new {new_churn:>12.0}   scan-on-full {old_churn:>10.0}   ratio {:.0}x",
        new_churn / old_churn
    );
}
