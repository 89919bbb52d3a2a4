#!/usr/bin/env node
// Verify a Sigstore bundle (v0.3, DSSE or message signature, public-key
// verification material) with sigstore-js, completely offline.
//
// usage: node tests/interop/sigstore_verify.mjs BUNDLE_JSON PUB_PEM
//            [--artifact FILE] [--require-hint]
//
// Uses @sigstore/bundle bundleFromJSON (schema checks: mediaType, exactly one
// DSSE signature, ...) and @sigstore/verify Verifier/toSignedEntity/
// toTrustMaterial with an empty TrustedRoot and a key finder that returns
// PUB_PEM for whatever `verificationMaterial.publicKey.hint` the bundle
// carries (as sigstore-js' own keySelector does). The top-level sigstore.verify()
// is NOT used: it fetches a TUF root. Thresholds (tlog, ctlog, timestamp) are 0,
// so a key-signed bundle without tlog entries or timestamps verifies; a bundle
// that does carry tlog entries or RFC 3161 timestamps fails, as no log or TSA
// is trusted here.
//   --require-hint   also require hint == "sha256:"+hex(SHA-256(SPKI DER of PUB_PEM))
//   --artifact FILE  DSSE: the in-toto payload must have a subject whose
//                    digest.sha256 is SHA-256(FILE); message signature: the
//                    signature is checked over FILE and messageDigest must match.
//
// exit 0: verified (one OK line); 1: rejected; 2: usage error.

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url); // resolves tests/interop/node_modules
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

const PROG = 'sigstore_verify';

class UsageError extends Error {}

function fail(message, code = 1) {
  process.stderr.write(`${PROG}: ${code === 2 ? 'usage error' : 'FAILED'}: ${message}\n`);
  process.exit(code);
}

function readFile(path) {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${e.code || e.message}`);
  }
}

function parseArgs(argv) {
  const pos = [];
  const opts = { artifact: null, requireHint: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--artifact') {
      if (i + 1 >= argv.length) throw new UsageError('--artifact needs FILE');
      opts.artifact = argv[++i];
    } else if (a.startsWith('--artifact=')) {
      opts.artifact = a.slice('--artifact='.length);
    } else if (a === '--require-hint') {
      opts.requireHint = true;
    } else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: sigstore_verify.mjs BUNDLE_JSON PUB_PEM [--artifact FILE] [--require-hint]\n');
      process.exit(0);
    } else if (a.startsWith('-') && a !== '-') {
      throw new UsageError(`unknown option ${a}`);
    } else {
      pos.push(a);
    }
  }
  if (pos.length !== 2) throw new UsageError('expected BUNDLE_JSON PUB_PEM');
  return { bundlePath: pos[0], pubPath: pos[1], ...opts };
}

function sha256hex(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

function main() {
  let args, pubKey, keyid, bundleText, artifact;
  try {
    args = parseArgs(process.argv.slice(2));
    const pem = readFile(args.pubPath);
    try {
      pubKey = createPublicKey(pem);
    } catch (e) {
      throw new UsageError(`${args.pubPath}: not a PEM public key (${e.message})`);
    }
    keyid = 'sha256:' + sha256hex(pubKey.export({ type: 'spki', format: 'der' }));
    bundleText = readFile(args.bundlePath).toString('utf8');
    artifact = args.artifact ? readFile(args.artifact) : undefined;
  } catch (e) {
    if (e instanceof UsageError) fail(e.message, 2);
    throw e;
  }

  let bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(bundleText));
  } catch (e) {
    const fields = e.fields ? ` [${e.fields.join(', ')}]` : '';
    fail(`bundle rejected by @sigstore/bundle: ${e.message}${fields}`);
  }
  if (bundle.verificationMaterial.content?.$case !== 'publicKey') {
    fail(`verification material is ${bundle.verificationMaterial.content?.$case}, expected publicKey`);
  }
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  if (args.requireHint && hint !== keyid) {
    fail(`publicKey.hint ${JSON.stringify(hint)} != keyid of ${args.pubPath} (${keyid})`);
  }

  const emptyRoot = TrustedRoot.fromJSON({
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  });
  const keyFinder = (h) => ({ publicKey: pubKey, validFor: () => true, hint: h });
  const trust = toTrustMaterial(emptyRoot, keyFinder);
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });

  let extra = '';
  try {
    const entity = toSignedEntity(bundle, artifact);
    verifier.verify(entity);
  } catch (e) {
    fail(`@sigstore/verify: ${e.code ? e.code + ': ' : ''}${e.message}`);
  }

  const content = bundle.content;
  if (content.$case === 'dsseEnvelope') {
    const env = content.dsseEnvelope;
    extra = ` payloadType=${env.payloadType} sigKeyid=${env.signatures[0].keyid || '(none)'}`;
    if (artifact) {
      const want = sha256hex(artifact);
      let stmt;
      try {
        stmt = JSON.parse(Buffer.from(env.payload).toString('utf8'));
      } catch (e) {
        fail(`--artifact given but the DSSE payload is not JSON (${e.message})`);
      }
      const subjects = Array.isArray(stmt?.subject) ? stmt.subject : [];
      if (!subjects.some((s) => s?.digest?.sha256 === want)) {
        fail(`no in-toto subject has digest.sha256 ${want} (sha256 of ${args.artifact})`);
      }
      extra += ` artifact=sha256:${want}`;
    }
  } else {
    if (!artifact) fail('message-signature bundle needs --artifact');
    const digest = Buffer.from(content.messageSignature.messageDigest.digest).toString('hex');
    if (digest !== sha256hex(artifact)) fail(`messageDigest ${digest} != sha256 of ${args.artifact}`);
    extra = ` messageSignature artifact=sha256:${digest}`;
  }
  const hintNote = hint === keyid ? 'matches key' : 'does NOT match key (not required)';
  process.stdout.write(
    `OK: sigstore-js verified bundle ${bundle.mediaType}: hint=${hint || '(empty)'} (${hintNote})${extra}\n`,
  );
  process.exit(0);
}

main();
