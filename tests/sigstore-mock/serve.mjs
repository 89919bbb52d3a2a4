#!/usr/bin/env node
// Fulcio v2, Rekor v1 and an RFC 3161 TSA for the keyless tests: the request handlers of
// @sigstore/mock 0.12.1 (by the Sigstore authors) served over HTTP on 127.0.0.1, with the
// mock's gaps closed so the tests are as strict as the real services:
//
//   Fulcio  the mock reads the token's claims without checking anything. Here the token must
//           be an ES256 JWT signed by this script's OIDC issuer key (minted by POST /__token),
//           with aud "sigstore", not expired (401 otherwise, as Fulcio), and the proof of
//           possession (the key's ECDSA signature over the token's email, or else its
//           subject) must verify with the submitted public key (400 otherwise).
//   Rekor   the mock logs a `dsse` proposal verbatim. Real Rekor canonicalises it: the body
//           is {envelopeHash, payloadHash, signatures:[{signature, verifier}]}, and every
//           signature must verify over the DSSE PAE with a submitted verifier (400
//           otherwise). Done here. `hashedrekord`: the signature must verify over the
//           artifact digest with the submitted certificate's key (ECDSA P-256 over the
//           prehashed digest, with @noble/curves: Node's crypto hashes its input itself).
//           A duplicate entry is answered 409 with the existing entry's Location, which
//           GET /api/v1/log/entries/{uuid} serves (the mock has neither).
//   TSA     the mock takes only Sigstore's JSON request form, stamps genTime with
//           milliseconds (which @sigstore/core cannot parse), a fixed serial, and a JS-number
//           nonce. Here it also takes DER `application/timestamp-query` requests (what
//           RFC 3161 clients send), stamps whole seconds, a random serial, and echoes the
//           request nonce exactly.
//
// Usage: node serve.mjs            (stdin must stay open: the server exits when it closes,
//                                   so a killed test leaves nothing behind)
// Prints one JSON line on stdout when ready:
//   {"url", "issuer", "fulcio": {"root"}, "ctlog": {"publicKey"}, "rekor": {"publicKey"},
//    "tsa": {"chain": [signing cert, root]}, "start"}     (DER as base64)
// Test controls (loopback only):
//   POST /__token   {"sub", "email"?, "expiresIn"?, "aud"?} -> {"token"}
//   POST /__control {"fulcio"|"rekor"|"tsa": "up"|"down"|"hang", "fulcioSan": "…"|null,
//                    "fulcioClockOffset": seconds}
//   GET  /__stats   -> request counts per service

import { createServer } from 'node:http';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const {
  initializeCA,
  initializeCTLog,
  initializeTLog,
  initializeTSA,
  fulcioHandler,
  rekorHandler,
} = require('@sigstore/mock/dist/index.js');
const pkijs = require('pkijs');
const asn1js = require('asn1js');
const jose = require('jose');
const canonicalize = require('canonicalize');
const { p256 } = require('@noble/curves/p256');

const ec = () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spki = (k) => k.export({ format: 'der', type: 'spki' });
const b64 = (b) => Buffer.from(b).toString('base64');

// ------------------------------------------------------------------------------ setup ----
const server = createServer();
// Idle keep-alive connections stay open longer than any test step (clients pool them).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}`;
const issuer = `${url}/oidc`;

const oidcKeys = ec();
const caKeys = ec();
const ctKeys = ec();
const rekorKeys = ec();
const tsaKeys = ec();

const ctlog = await initializeCTLog(ctKeys);
const ca = await initializeCA(caKeys, ctlog);
const tlog = await initializeTLog(url, rekorKeys);
const tsa = await initializeTSA(tsaKeys);

const state = {
  fulcio: 'up',
  rekor: 'up',
  tsa: 'up',
  fulcioSan: null,
  fulcioClockOffset: 0,
  stats: { fulcio: 0, rekor: 0, tsa: 0 },
};

// The CA's clock (expired-certificate tests move it) and SAN (mismatch tests override it).
ca.getCurrentTime = () => new Date(Date.now() + state.fulcioClockOffset * 1000);
const issue = ca.issueCertificate.bind(ca);
ca.issueCertificate = (opts) =>
  issue(state.fulcioSan ? { ...opts, subjectAltName: state.fulcioSan } : opts);

// Whole seconds, a random serial, the request's nonce as sent (any size).
tsa.getCurrentTime = () => new Date(Math.floor(Date.now() / 1000) * 1000);
tsa.tstInfo = (req) =>
  new pkijs.TSTInfo({
    version: 1,
    policy: req.policyOID,
    messageImprint: new pkijs.MessageImprint({
      hashAlgorithm: new pkijs.AlgorithmIdentifier({ algorithmId: req.hashAlgorithmOID }),
      hashedMessage: new asn1js.OctetString({ valueHex: req.artifactHash }),
    }),
    serialNumber: new asn1js.Integer({ valueHex: positive(crypto.randomBytes(16)) }),
    genTime: tsa.getCurrentTime(),
    accuracy: new pkijs.Accuracy({ seconds: 1 }),
    ...(req.nonceBytes
      ? { nonce: new asn1js.Integer({ valueHex: req.nonceBytes }) }
      : { nonce: new asn1js.Integer({ value: req.nonce }) }),
  });

function positive(buf) {
  const b = Buffer.from(buf);
  b[0] = (b[0] & 0x7f) | 0x01;
  return b;
}

const fulcio = fulcioHandler(ca);
// Logged entries: canonical-body hash -> {uuid, response}; uuid -> response.
const logged = new Map();
const byUuid = new Map();
const rekor = rekorHandler(tlog);

// ------------------------------------------------------------------------ gap closing ----
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function checkFulcioRequest(body) {
  let json;
  try {
    json = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'request is not JSON');
  }
  const token = json?.credentials?.oidcIdentityToken;
  if (typeof token !== 'string') throw new HttpError(400, 'missing credentials.oidcIdentityToken');
  let claims;
  try {
    ({ payload: claims } = await jose.jwtVerify(token, oidcKeys.publicKey, {
      issuer,
      audience: 'sigstore',
      algorithms: ['ES256'],
    }));
  } catch (e) {
    // Fulcio answers 401 for a token it cannot verify (bad signature, expired, wrong audience).
    throw new HttpError(401, `invalid identity token: ${e.code || ''} ${e.message}`);
  }
  const pkr = json.publicKeyRequest;
  if (!pkr?.publicKey?.content || typeof pkr.proofOfPossession !== 'string') {
    throw new HttpError(400, 'publicKeyRequest with publicKey.content and proofOfPossession required');
  }
  let key;
  try {
    key = crypto.createPublicKey(pkr.publicKey.content);
  } catch {
    throw new HttpError(400, 'publicKey.content is not a PEM public key');
  }
  let challenge;
  if (claims.email !== undefined) {
    if (claims.email_verified !== true) throw new HttpError(400, 'email not verified');
    challenge = claims.email;
  } else {
    challenge = claims.sub;
  }
  const pop = Buffer.from(pkr.proofOfPossession, 'base64');
  if (!crypto.verify('sha256', Buffer.from(challenge), key, pop)) {
    throw new HttpError(400, 'the proof of possession does not verify');
  }
}

function pae(type, payload) {
  const t = Buffer.from(type);
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${t.length} `),
    t,
    Buffer.from(` ${payload.length} `),
    payload,
  ]);
}

const sha256hex = (b) => crypto.createHash('sha256').update(b).digest('hex');

// The canonical `dsse` 0.0.1 body real Rekor stores, after verifying the signatures.
function canonicalDsse(proposal) {
  const pc = proposal?.spec?.proposedContent;
  if (typeof pc?.envelope !== 'string' || !Array.isArray(pc.verifiers) || pc.verifiers.length === 0) {
    throw new HttpError(400, 'dsse: proposedContent.envelope (string) and verifiers required');
  }
  let env;
  try {
    env = JSON.parse(pc.envelope);
  } catch {
    throw new HttpError(400, 'dsse: the envelope is not JSON');
  }
  if (typeof env.payloadType !== 'string' || typeof env.payload !== 'string' || !Array.isArray(env.signatures) || env.signatures.length === 0) {
    throw new HttpError(400, 'dsse: malformed envelope');
  }
  const payload = Buffer.from(env.payload, 'base64');
  const message = pae(env.payloadType, payload);
  const verifiers = pc.verifiers.map((v) => {
    const pem = Buffer.from(v, 'base64').toString('utf8');
    try {
      const key = pem.includes('CERTIFICATE')
        ? new crypto.X509Certificate(pem).publicKey
        : crypto.createPublicKey(pem);
      return { v, key };
    } catch {
      throw new HttpError(400, 'dsse: a verifier is not a PEM certificate or key');
    }
  });
  const signatures = env.signatures.map((s) => {
    const sig = Buffer.from(s.sig, 'base64');
    const by = verifiers.find(({ key }) => crypto.verify('sha256', message, key, sig));
    if (!by) throw new HttpError(400, 'dsse: a signature does not verify with any verifier');
    return { signature: s.sig, verifier: by.v };
  });
  signatures.sort((a, b) => (a.signature < b.signature ? -1 : a.signature > b.signature ? 1 : 0));
  return {
    apiVersion: '0.0.1',
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256hex(Buffer.from(pc.envelope)) },
      payloadHash: { algorithm: 'sha256', value: sha256hex(payload) },
      signatures,
    },
  };
}

function checkHashedRekord(proposal) {
  const spec = proposal?.spec;
  const hash = spec?.data?.hash;
  if (hash?.algorithm !== 'sha256' || !/^[0-9a-f]{64}$/.test(hash?.value || '')) {
    throw new HttpError(400, 'hashedrekord: spec.data.hash must be sha256 with 64 hex digits');
  }
  if (typeof spec?.signature?.content !== 'string') throw new HttpError(400, 'hashedrekord: no signature');
  const pem = Buffer.from(spec.signature?.publicKey?.content || '', 'base64').toString('utf8');
  let key;
  try {
    key = pem.includes('CERTIFICATE') ? new crypto.X509Certificate(pem).publicKey : crypto.createPublicKey(pem);
  } catch {
    throw new HttpError(400, 'hashedrekord: publicKey.content is not a PEM certificate or key');
  }
  // Real Rekor verifies the signature over the (pre-hashed) artifact digest.
  if (key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new HttpError(400, 'hashedrekord: only ECDSA P-256 keys are supported here');
  }
  const point = key.export({ format: 'der', type: 'spki' }).subarray(-65);
  let ok = false;
  try {
    const sig = p256.Signature.fromDER(Buffer.from(spec.signature.content, 'base64'));
    ok = p256.verify(sig, Buffer.from(hash.value, 'hex'), point, { prehash: false, lowS: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new HttpError(400, 'hashedrekord: the signature does not verify over the digest');
  return {
    apiVersion: '0.0.1',
    kind: 'hashedrekord',
    spec: {
      data: { hash: { algorithm: 'sha256', value: hash.value } },
      signature: { content: spec.signature.content, publicKey: { content: spec.signature.publicKey.content } },
    },
  };
}

function canonicalRekor(body) {
  let p;
  try {
    p = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'proposed entry is not JSON');
  }
  if (p?.apiVersion !== '0.0.1') throw new HttpError(400, `unsupported apiVersion ${p?.apiVersion}`);
  if (p.kind === 'dsse') return canonicalDsse(p);
  if (p.kind === 'hashedrekord') return checkHashedRekord(p);
  throw new HttpError(400, `unsupported kind ${p?.kind}`);
}

// The DER TimeStampReq of RFC 3161 clients, as the mock's request object.
function parseTimeStampReq(der) {
  let req;
  try {
    req = pkijs.TimeStampReq.fromBER(new Uint8Array(der).buffer);
  } catch (e) {
    throw new HttpError(400, `not a TimeStampReq: ${e.message}`);
  }
  return {
    artifactHash: Buffer.from(req.messageImprint.hashedMessage.valueBlock.valueHexView),
    hashAlgorithmOID: req.messageImprint.hashAlgorithm.algorithmId,
    nonceBytes: req.nonce ? Buffer.from(req.nonce.valueBlock.valueHexView) : undefined,
    nonce: undefined,
    policyOID: req.reqPolicy || '1.3.6.1.4.1.57264.2',
    certReq: req.certReq ?? false,
  };
}

// ------------------------------------------------------------------------------ serve ----
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > 8 << 20) {
        reject(new HttpError(413, 'too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

async function gate(res, name) {
  state.stats[name] += 1;
  if (state[name] === 'down') {
    send(res, 503, JSON.stringify({ code: 503, message: `${name} is down (test control)` }));
    return false;
  }
  if (state[name] === 'hang') {
    // Never answer: the client's timeout must fire.
    return false;
  }
  return true;
}

server.on('request', async (req, res) => {
  try {
    const body = await readBody(req);
    const path = req.url.split('?')[0];
    if (req.method === 'POST' && path === '/api/v2/signingCert') {
      if (!(await gate(res, 'fulcio'))) return;
      await checkFulcioRequest(body.toString('utf8'));
      const r = await fulcio.fn(body.toString('utf8'));
      return send(res, r.statusCode, r.response, r.contentType || 'text/plain');
    }
    if (req.method === 'POST' && path === '/api/v1/log/entries') {
      if (!(await gate(res, 'rekor'))) return;
      const canonical = canonicalRekor(body.toString('utf8'));
      // Real Rekor refuses a duplicate with 409 and the existing entry's Location.
      const key = sha256hex(Buffer.from(canonicalize(canonical)));
      const seen = logged.get(key);
      if (seen) {
        res.writeHead(409, {
          'content-type': 'application/json',
          location: `/api/v1/log/entries/${seen.uuid}`,
        });
        return res.end(JSON.stringify({ code: 409, message: `An equivalent entry already exists in the transparency log with UUID ${seen.uuid}` }));
      }
      const r = await rekor.fn(JSON.stringify(canonical));
      if (r.statusCode === 201) {
        const uuid = Object.keys(JSON.parse(r.response))[0];
        logged.set(key, { uuid, response: r.response });
        byUuid.set(uuid, r.response);
      }
      return send(res, r.statusCode, r.response, r.contentType || 'text/plain');
    }
    if (req.method === 'GET' && path.startsWith('/api/v1/log/entries/')) {
      if (!(await gate(res, 'rekor'))) return;
      const entry = byUuid.get(path.slice('/api/v1/log/entries/'.length));
      if (!entry) return send(res, 404, JSON.stringify({ code: 404, message: 'entry not found' }));
      return send(res, 200, entry);
    }
    if (req.method === 'POST' && path === '/api/v1/timestamp') {
      if (!(await gate(res, 'tsa'))) return;
      const type = (req.headers['content-type'] || '').split(';')[0].trim();
      let tsr;
      if (type === 'application/timestamp-query') {
        tsr = parseTimeStampReq(body);
      } else {
        const j = JSON.parse(body.toString('utf8'));
        tsr = {
          artifactHash: Buffer.from(j.artifactHash, 'base64'),
          hashAlgorithmOID: '2.16.840.1.101.3.4.2.1',
          nonce: j.nonce || 1234567890,
          policyOID: j.tsaPolicyOID || '1.3.6.1.4.1.57264.2',
          certReq: j.certificates ?? false,
        };
      }
      const resp = await tsa.timestamp(tsr);
      return send(res, 200, resp, 'application/timestamp-reply');
    }
    if (req.method === 'POST' && path === '/__token') {
      const j = JSON.parse(body.toString('utf8') || '{}');
      const now = Math.floor(Date.now() / 1000);
      const claims = { sub: j.sub };
      if (j.email !== undefined) {
        claims.email = j.email;
        claims.email_verified = j.emailVerified ?? true;
      }
      const token = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
        .setIssuer(issuer)
        .setAudience(j.aud || 'sigstore')
        .setIssuedAt(now - 5)
        .setExpirationTime(now + (j.expiresIn ?? 600))
        .sign(oidcKeys.privateKey);
      return send(res, 200, JSON.stringify({ token }));
    }
    if (req.method === 'POST' && path === '/__control') {
      Object.assign(state, JSON.parse(body.toString('utf8')));
      return send(res, 200, JSON.stringify({ ok: true }));
    }
    if (req.method === 'GET' && path === '/__stats') {
      return send(res, 200, JSON.stringify(state.stats));
    }
    send(res, 404, JSON.stringify({ message: `no route ${req.method} ${path}` }));
  } catch (e) {
    const status = e instanceof HttpError ? e.status : 500;
    send(res, status, JSON.stringify({ code: status, message: e.message }));
  }
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

process.stdout.write(
  JSON.stringify({
    url,
    issuer,
    start: new Date(Date.now() - 60_000).toISOString(),
    fulcio: { root: b64(ca.rootCertificate) },
    ctlog: { publicKey: b64(spki(ctKeys.publicKey)) },
    rekor: { publicKey: b64(spki(rekorKeys.publicKey)) },
    tsa: { chain: [b64(tsa.intCertificate), b64(tsa.rootCertificate)] },
  }) + '\n',
);
