// TEST ONLY: a real OAuth 2.0 authorization server (oidc-provider) standing in for the
// StellaOps Authority in the Signer service tests. Pinned to 8.8.1, the last release line that
// supports Node 20 LTS (every 9.x warns "Unsupported runtime" below Node 22); it has every
// feature used here (client credentials, DPoP, mTLS-bound tokens, resource indicators).
//
// Usage: node authority.mjs CONFIG.json
// CONFIG: {
//   "issuer": "https://authority.stella.test",
//   "signingKeyPem": "PKCS#8 PEM of the ES256 token signing key", "kid": "test-key-1",
//   "tls": {"cert": "server.pem", "key": "server.key", "ca": "ca.pem"},   (optional: HTTPS + client certs)
//   "clients": [{"client_id", "client_secret", "tid", "inst", "scope", "dpop": bool, "mtls": bool}]
// }
// Prints one line `{"port": N}` on stdout once listening on 127.0.0.1 (a free port).
//
// Access tokens are client-credentials JWTs (RFC 9068 `at+jwt`, ES256) for the resource
// `urn:stella:signer` (RFC 8707 resource indicator) with `aud: "signer"`, the requested scope
// intersected with `signer.sign signer.audit signer.audit.admin other.scope`, the client's `tid`/`inst` as extra claims, and
// `cnf.jkt` (DPoP, RFC 9449) or `cnf.x5t#S256` (certificate-bound, RFC 8705) bindings.
// For the resource `urn:stella:sigstore` the token's `aud` is `sigstore` (the Signer's own
// identity token for keyless signing, which Fulcio accepts).
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const signingJwk = {
  ...crypto.createPrivateKey(config.signingKeyPem).export({ format: 'jwk' }),
  kid: config.kid ?? 'test-key-1',
  alg: 'ES256',
  use: 'sig',
};

const RESOURCE = 'urn:stella:signer';
// Tokens for Fulcio (`aud: sigstore`): the Signer's identity for keyless signing.
const SIGSTORE_RESOURCE = 'urn:stella:sigstore';

const clients = config.clients.map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_post',
  id_token_signed_response_alg: 'ES256',
  scope: c.scope ?? 'signer.sign other.scope',
  dpop_bound_access_tokens: Boolean(c.dpop),
  tls_client_certificate_bound_access_tokens: Boolean(c.mtls),
  tid: c.tid,
  inst: c.inst,
}));

const provider = new Provider(config.issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  // Cookie signing keys (unused by client credentials; set so the Authority does not warn).
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  extraClientMetadata: { properties: ['tid', 'inst'] },
  scopes: ['signer.sign', 'signer.audit', 'signer.audit.admin', 'other.scope'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    dPoP: { enabled: true },
    mTLS: {
      enabled: Boolean(config.tls),
      certificateBoundAccessTokens: Boolean(config.tls),
      getCertificate(ctx) {
        const socket = ctx.req.socket;
        if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return undefined;
        const peer = socket.getPeerCertificate(false);
        if (!peer || !peer.raw) return undefined;
        return new crypto.X509Certificate(peer.raw);
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator) {
        // The Signer's own identity tokens for keyless signing (Fulcio's audience).
        if (resourceIndicator === SIGSTORE_RESOURCE) {
          return {
            scope: 'signer.sign other.scope',
            audience: 'sigstore',
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resourceIndicator !== RESOURCE) {
          throw new Error(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: 'signer.sign signer.audit signer.audit.admin other.scope',
          audience: 'signer',
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  async extraTokenClaims(ctx) {
    const meta = ctx.oidc.client.metadata();
    return { tid: meta.tid, inst: meta.inst };
  },
});
provider.on('server_error', (_ctx, err) => console.error('authority server_error', err));

const callback = provider.callback();
const server = config.tls
  ? https.createServer({
    cert: fs.readFileSync(config.tls.cert),
    key: fs.readFileSync(config.tls.key),
    ca: fs.readFileSync(config.tls.ca),
    requestCert: true,
    rejectUnauthorized: false,
  }, callback)
  : http.createServer(callback);

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

// Stop when the test harness goes away (stdin closes) or asks.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
