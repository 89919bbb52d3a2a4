#!/usr/bin/env python3
"""What the audit API's indexes cost the SQLite write path, and what they buy a query.

Side by side in one run, on the same machine and disk, interleaved rounds: the audit log's
group commit (WAL, synchronous=FULL, one transaction per batch, one fsync per batch) with
  A) the schema before the audit API (primary key + time index), and
  B) the schema with the audit API's indexes (expression indexes on tenant and outcome, and
     the audit_subject table written in the same transaction, as crates/store/src/sqlite.rs).
Then the same page query (tenant filter, 100 rows past a cursor) on A (no tenant index: a
walk along seq) and on B. SQL-level measurement with Python's sqlite3 (the system SQLite, not the
bundled one the service links): it isolates the database-side cost of the change; the
service's own overhead is the same in both arms.

Usage: python3 scripts/audit-index-bench.py [--records N] [--batch B] [--rounds R]
Temporary databases live in a temp folder (TMPDIR honoured) and are removed at the end.
"""
import argparse
import json
import os
import sqlite3
import tempfile
import time

BASE = """
CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, audit_id TEXT NOT NULL,
    record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_log_time ON audit_log(time);
"""
API = """
CREATE INDEX audit_log_tenant ON audit_log(json_extract(record, '$.tenant'), seq);
CREATE INDEX audit_log_outcome ON audit_log(json_extract(record, '$.outcome'), seq);
CREATE TABLE audit_subject (digest TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (digest, seq)) WITHOUT ROWID;
"""


def record(i):
    digest = "sha256:" + format(i * 2654435761 % (1 << 64), "016x") * 4
    return digest, json.dumps({
        "auditId": f"a{i:012d}", "caller": {"client": "ci-client", "sub": "ci"},
        "envelopeSha256": "ab" * 32, "installation": "inst-1", "keyIds": ["sha256:" + "cd" * 32],
        "latencyMs": 3.2, "licenseId": "lic-1", "outcome": "signed" if i % 10 else "denied",
        "plan": "team", "poeState": "cached", "predicateType": "https://slsa.dev/provenance/v1",
        "route": "POST /api/v1/signer/sign/dsse", "scannerDigest": "sha256:" + "11" * 32,
        "scannerVerdict": "trusted-allowlist", "senderBinding": "dpop jkt=" + "x" * 43,
        "signingMode": "file", "status": 200, "subjectDigests": [digest],
        "tenant": f"tenant-{i % 50}", "time": f"2026-01-01T00:00:{i % 60:02d}.000Z",
        "traceId": "0af7651916cd43dd8448eb211c80319c",
    }, separators=(",", ":"), sort_keys=True)


def open_db(path, api):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.executescript(BASE + (API if api else ""))
    return c


def write(c, api, records, batch, start):
    seq = start
    t0 = time.perf_counter()
    for i in range(0, len(records), batch):
        c.execute("BEGIN")
        for digest, js in records[i:i + batch]:
            seq += 1
            if api:
                c.execute("INSERT OR IGNORE INTO audit_subject (digest, seq) VALUES (?, ?)",
                          (digest, seq))
            c.execute("INSERT INTO audit_log (seq, time, audit_id, record, prev_hash, hash) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (seq, "t", f"a{seq}", js, "0" * 64, "1" * 64))
        c.execute("COMMIT")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    records = [record(i) for i in range(a.records)]
    with tempfile.TemporaryDirectory(prefix="stella-audit-bench-") as d:
        dbs = {k: open_db(os.path.join(d, f"{k}.db"), k == "B") for k in "AB"}
        secs = {"A": 0.0, "B": 0.0}
        for r in range(a.rounds):
            for k in ("AB" if r % 2 == 0 else "BA"):
                secs[k] += write(dbs[k], k == "B", records, a.batch, r * a.records)
        n = a.records * a.rounds
        print(f"sqlite {sqlite3.sqlite_version}, {n} records per arm, batches of {a.batch}, "
              f"synchronous=FULL, {a.rounds} interleaved rounds")
        for k, label in (("A", "before (pk + time index)"), ("B", "with audit API indexes")):
            print(f"  {label:28s} {n / secs[k]:10.0f} records/s")
        print(f"  write throughput B/A = {secs['A'] / secs['B']:.2f}")
        after = n // 2
        q = ("SELECT seq FROM audit_log WHERE seq > ? AND "
             "json_extract(record, '$.tenant') = ? ORDER BY seq LIMIT 100")
        timing = {}
        for k in "AB":
            t0 = time.perf_counter()
            for i in range(50):
                rows = dbs[k].execute(q, (after, f"tenant-{i % 50}")).fetchall()
                assert len(rows) == 100
            timing[k] = (time.perf_counter() - t0) / 50
        print(f"  tenant page query (100 rows past seq {after}, 50 tenants): "
              f"A {timing['A'] * 1e3:.2f} ms, B {timing['B'] * 1e3:.2f} ms, "
              f"A/B = {timing['A'] / timing['B']:.0f}x")
        for c in dbs.values():
            c.close()


if __name__ == "__main__":
    main()
