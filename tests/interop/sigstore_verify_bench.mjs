#!/usr/bin/env node
// @sigstore/verify on the same bundles as crates/sigstore/benches/verify.rs, in one process:
// N iterations of bundleFromJSON + toSignedEntity + Verifier.verify per bundle (the trusted
// material built once). Prints µs per bundle. Used by scripts/sigstore-bench.sh.
//
// usage: node tests/interop/sigstore_verify_bench.mjs DATA_DIR ROOTS_DIR [N [CASE]]
// (CASE: 0 or 1 to run one bundle only, e.g. once per process for the CLI comparison)
// (the staging message-signature bundle is left out: sigstore-js needs the artifact bytes,
// which the vector does not ship.)

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createPublicKey } from 'node:crypto';

const require = createRequire(import.meta.url);
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

const [dataDir, rootsDir, nArg, caseArg] = process.argv.slice(2);
const N = Number(nArg || 1000);
const json = (p) => JSON.parse(readFileSync(p, 'utf8'));

const pg = json(`${rootsDir}/public-good.json`);
const tsaRoot = { ...pg, timestampAuthorities: json(`${dataDir}/public-good/tsa-github-staging.json`) };
const npmKey = createPublicKey(readFileSync(`${dataDir}/public-good/npm-registry.pub`));

const cases = [
  {
    name: 'public-good v0.1 DSSE (cert, SCT, RFC 3161 timestamp)',
    bundle: json(`${dataDir}/public-good/bundle-with-timestamp.json`),
    trust: toTrustMaterial(TrustedRoot.fromJSON(tsaRoot)),
    options: { tlogThreshold: 0, ctlogThreshold: 1, timestampThreshold: 1 },
    policy: { subjectAlternativeName: 'brian@dehamer.com', extensions: { issuer: 'https://github.com/login/oauth' } },
  },
  {
    name: 'public-good v0.1 DSSE (npm key, intoto entry, SET)',
    bundle: json(`${dataDir}/public-good/bundle-publish.json`),
    trust: toTrustMaterial(TrustedRoot.fromJSON(pg), () => ({ publicKey: npmKey, validFor: () => true })),
    options: { tlogThreshold: 1, ctlogThreshold: 0, timestampThreshold: 1 },
    policy: {},
  },
];

for (const c of caseArg === undefined ? cases : [cases[Number(caseArg)]]) {
  const verifier = new Verifier(c.trust, c.options);
  const once = () => verifier.verify(toSignedEntity(bundleFromJSON(c.bundle)), c.policy);
  once(); // warm up, and it must verify
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) once();
  const us = Number(process.hrtime.bigint() - t) / 1000 / N;
  console.log(`@sigstore/verify ${us.toFixed(1).padStart(8)} us/bundle  n=${N}  ${c.name}`);
}
