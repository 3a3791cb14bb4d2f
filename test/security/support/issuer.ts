import { generateKeyPairSync, type JsonWebKey, type KeyObject, randomUUID, sign as cryptoSign } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A trusted token issuer under the test's full control: its own RSA, P-256 and Ed25519 keys,
 * OIDC discovery and a JWKS endpoint whose behaviour can be switched at run time (fail, hang,
 * garbage, huge, redirect…), and a signer that signs raw header and payload bytes — so tests can
 * build tokens no JOSE library would produce (duplicate members, `1e999`, non-canonical base64,
 * forged signatures) and still have them verified against keys the sidecar trusts.
 *
 *   const iss = await startTestIssuer();
 *   const good = iss.token();                                // valid RS256 at+jwt for urn:ward:orders
 *   const raw = iss.signRaw('{"alg":"RS256","typ":"at+jwt","kid":"rs-1"}', '{"iss":…}');
 */

export type KeyName = 'rs' | 'es' | 'ed';
const ALG: Record<KeyName, string> = { rs: 'RS256', es: 'ES256', ed: 'EdDSA' };

/** What the JWKS (and discovery) endpoints do. */
export type EndpointMode =
  | 'ok'
  | 'error500'
  | 'hang' // accept the request, never answer
  | 'garbage' // 200 with a body that is not JSON
  | 'not-a-jwks' // 200 JSON without usable keys
  | 'huge' // 200 with a declared 4 MiB JSON body
  | 'endless' // 200, chunked, never-ending stream of bytes
  | 'redirect' // 302 to an attacker's key set
  | 'slow-drip'; // headers at once, then one byte a second

interface KeyPair {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: KeyObject;
  readonly jwk: JsonWebKey;
}

export interface TestIssuer {
  readonly issuer: string;
  readonly port: number;
  readonly jwksUri: string;
  /** Current kid per key type. */
  kid(k: KeyName): string;
  /** JWKS behaviour from now on (discovery keeps answering unless `discoveryMode` is set). */
  mode: EndpointMode;
  discoveryMode: EndpointMode;
  /** RFC 7662 introspection endpoint behaviour; in `ok` mode it answers `introspectionAnswer`. */
  introspectionMode: EndpointMode;
  introspectionAnswer: Record<string, unknown>;
  /** Introspection requests received (the token parameter of each). */
  readonly introspected: string[];
  /** Requests the JWKS endpoint received. */
  readonly jwksHits: () => number;
  /** A valid claim set for `urn:ward:orders` (5 minutes, `scope: orders.read`) with `over` merged (undefined removes). */
  claims(over?: Record<string, unknown>): Record<string, unknown>;
  /** A properly signed token; `header` is merged over `{alg, typ: at+jwt, kid}`. */
  token(over?: Record<string, unknown>, header?: Record<string, unknown>, key?: KeyName): string;
  /** Signs exactly these header and payload texts (JSON or not) with `key`. */
  signRaw(headerJson: string, payloadJson: string, key?: KeyName): string;
  /** The signature `key` would put on `signingInput` (base64url). */
  signature(signingInput: string, key?: KeyName): string;
  /** New key pairs (new kids) for every type; the old ones stay published only if `keepOld`. */
  rotate(keepOld?: boolean): void;
  /** Raw JWKs published after the real keys (e.g. an off-curve point); empty by default. */
  readonly extraJwks: JsonWebKey[];
  /** Public JWK of the current key of type `k`. */
  publicJwk(k: KeyName): JsonWebKey;
  close(): Promise<void>;
}

const b64u = (s: string | Buffer): string => Buffer.from(s).toString('base64url');

function makeKey(k: KeyName, n: number): KeyPair {
  const kid = `${k}-${n}`;
  const pair =
    k === 'rs'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : k === 'es'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  const jwk = { ...pair.publicKey.export({ format: 'jwk' }), kid, alg: ALG[k], use: 'sig' };
  return { kid, alg: ALG[k], privateKey: pair.privateKey, jwk };
}

export async function startTestIssuer(): Promise<TestIssuer> {
  let generation = 1;
  let current: Record<KeyName, KeyPair> = { rs: makeKey('rs', 1), es: makeKey('es', 1), ed: makeKey('ed', 1) };
  let published: KeyPair[] = Object.values(current);
  let hits = 0;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const server = http.createServer();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const jwksUri = `${issuer}/jwks`;

  const self: TestIssuer = {
    issuer,
    port,
    jwksUri,
    mode: 'ok',
    discoveryMode: 'ok',
    introspectionMode: 'ok',
    introspectionAnswer: { active: false },
    introspected: [],
    jwksHits: () => hits,
    kid: (k) => current[k].kid,
    claims(over = {}) {
      const now = Math.floor(Date.now() / 1000);
      const c: Record<string, unknown> = {
        iss: issuer,
        sub: 'alice',
        client_id: 'frontend',
        aud: 'urn:ward:orders',
        scope: 'orders.read',
        iat: now,
        exp: now + 300,
        jti: randomUUID(),
        ...over,
      };
      for (const [k, v] of Object.entries(c)) if (v === undefined) delete c[k];
      return c;
    },
    token(over = {}, header = {}, key = 'rs') {
      const h: Record<string, unknown> = { alg: current[key].alg, typ: 'at+jwt', kid: current[key].kid, ...header };
      for (const [k, v] of Object.entries(h)) if (v === undefined) delete h[k];
      return self.signRaw(JSON.stringify(h), JSON.stringify(self.claims(over)), key);
    },
    signRaw(headerJson, payloadJson, key = 'rs') {
      const input = `${b64u(headerJson)}.${b64u(payloadJson)}`;
      return `${input}.${self.signature(input, key)}`;
    },
    signature(input, key = 'rs') {
      const kp = current[key];
      const data = Buffer.from(input, 'latin1');
      const sig =
        key === 'rs'
          ? cryptoSign('sha256', data, kp.privateKey)
          : key === 'es'
            ? cryptoSign('sha256', data, { key: kp.privateKey, dsaEncoding: 'ieee-p1363' })
            : cryptoSign(null, data, kp.privateKey);
      return b64u(sig);
    },
    rotate(keepOld = true) {
      generation++;
      const next = { rs: makeKey('rs', generation), es: makeKey('es', generation), ed: makeKey('ed', generation) };
      published = keepOld ? [...Object.values(next), ...published] : Object.values(next);
      current = next;
    },
    publicJwk: (k) => current[k].jwk,
    extraJwks: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };

  function misbehave(mode: EndpointMode, res: ServerResponse, okBody: () => string): void {
    switch (mode) {
      case 'ok':
        res.writeHead(200, { 'content-type': 'application/json' }).end(okBody());
        return;
      case 'error500':
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"server_error"}');
        return;
      case 'hang':
        return; // never answered; the socket is destroyed on close()
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' }).end('<html>\u0000\uFFFD not json {{{');
        return;
      case 'not-a-jwks':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}]}');
        return;
      case 'huge': {
        const body = `{"keys":[],"pad":"${'x'.repeat(4 * 1024 * 1024)}"}`;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        return;
      }
      case 'endless': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        res.write('{"keys":[');
        pump();
        return;
      }
      case 'redirect':
        res.writeHead(302, { location: 'http://127.0.0.1:9/attacker-jwks' }).end();
        return;
      case 'slow-drip': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const body = okBody();
        let i = 0;
        const drip = (): void => {
          if (res.destroyed) return;
          if (i >= body.length) {
            res.end();
            return;
          }
          res.write(body[i++]);
          const t = setTimeout(drip, 1000);
          timers.add(t);
        };
        drip();
        return;
      }
    }
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    res.on('error', () => {});
    if (req.url === '/introspect') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        self.introspected.push(new URLSearchParams(body).get('token') ?? '');
        misbehave(self.introspectionMode, res, () => JSON.stringify(self.introspectionAnswer));
      });
      return;
    }
    req.resume();
    if (req.url === '/.well-known/openid-configuration') {
      misbehave(self.discoveryMode, res, () =>
        JSON.stringify({ issuer, jwks_uri: jwksUri, token_endpoint: `${issuer}/token`, introspection_endpoint: `${issuer}/introspect`, response_types_supported: ['code'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] }),
      );
      return;
    }
    if (req.url === '/jwks') {
      hits++;
      misbehave(self.mode, res, () => JSON.stringify({ keys: [...published.map((k) => k.jwk), ...self.extraJwks] }));
      return;
    }
    res.writeHead(404).end();
  });

  return self;
}
