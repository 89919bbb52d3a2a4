#!/usr/bin/env node
// Verify a keyless Sigstore bundle (leaf certificate) with sigstore-js @sigstore/verify,
// offline, against a given trusted_root.json and certificate identity.
//
// usage: node tests/sigstore-mock/verify.mjs BUNDLE TRUSTED_ROOT --san SAN --issuer ISS
//            [--artifact FILE] [--tlog-threshold N]
//
// @sigstore/verify comes from tests/interop/node_modules (the interop peers). Thresholds:
// ctlog 1 (an embedded SCT by a CT log of the root), timestamp 1 (an RFC 3161 timestamp or a
// tlog integrated time), tlog as given (default 0). The top-level sigstore.verify() is not
// used (it fetches a TUF root).
// exit 0: verified (one OK line); 1: rejected; 2: usage error.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'interop', 'package.json'));
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

function usage(msg) {
  process.stderr.write(`verify.mjs: usage error: ${msg}\n`);
  process.exit(2);
}

const pos = [];
const opts = { tlogThreshold: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const next = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  if (a === '--san') opts.san = next();
  else if (a === '--issuer') opts.issuer = next();
  else if (a === '--artifact') opts.artifact = next();
  else if (a === '--tlog-threshold') opts.tlogThreshold = Number(next());
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else pos.push(a);
}
if (pos.length !== 2 || !opts.san || !opts.issuer) usage('BUNDLE TRUSTED_ROOT --san SAN --issuer ISS');

let bundle;
try {
  bundle = bundleFromJSON(JSON.parse(readFileSync(pos[0], 'utf8')));
} catch (e) {
  process.stderr.write(`verify.mjs: FAILED: bundle rejected by @sigstore/bundle: ${e.message}\n`);
  process.exit(1);
}
const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(pos[1], 'utf8')));
const artifact = opts.artifact ? readFileSync(opts.artifact) : undefined;
try {
  const verifier = new Verifier(toTrustMaterial(root), {
    tlogThreshold: opts.tlogThreshold,
    ctlogThreshold: 1,
    timestampThreshold: 1,
  });
  const signer = verifier.verify(toSignedEntity(bundle, artifact), {
    subjectAlternativeName: opts.san,
    extensions: { issuer: opts.issuer },
  });
  process.stdout.write(
    `OK: @sigstore/verify verified ${bundle.mediaType} (${bundle.content.$case}) san=${signer.identity?.subjectAlternativeName} issuer=${signer.identity?.extensions?.issuer} tlog=${bundle.verificationMaterial.tlogEntries.length}\n`,
  );
} catch (e) {
  process.stderr.write(`verify.mjs: FAILED: @sigstore/verify: ${e.code ? e.code + ': ' : ''}${e.message}\n`);
  process.exit(1);
}
