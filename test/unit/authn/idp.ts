import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CompactSign, exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK } from 'jose';

/**
 * A real OIDC issuer on 127.0.0.1:0 for the authn tests: discovery document, JWKS and an
 * RFC 7662 introspection endpoint, each of which can be made to fail, hang or redirect.
 */

export type Mode = 'ok' | 'fail' | 'hang' | 'redirect';

export interface SigningKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function makeKey(kid: string, alg: 'ES256' | 'RS256' | 'PS256' | 'EdDSA' = 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk };
}

export interface IdpOptions {
  /** Expected client credentials on the introspection endpoint (HTTP Basic). */
  readonly clientId?: string;
  readonly clientSecret?: string;
  /** A path under which the issuer lives (`/realms/prod`): its identifier and every endpoint. */
  readonly path?: string;
}

export class FakeIdp {
  readonly server: Server;
  issuer = '';
  /** Keys served in the JWKS, in order. */
  published: SigningKey[] = [];
  discoveryMode: Mode = 'ok';
  /** The `issuer` the discovery document names, when not this issuer (a mix-up). */
  discoveryIssuer: string | undefined;
  jwksMode: Mode = 'ok';
  introspectionMode: Mode = 'ok';
  /** Introspection answer per token; unknown tokens are `{ active: false }`. */
  readonly introspection = new Map<string, Record<string, unknown>>();
  readonly hits = { discovery: 0, jwks: 0, introspection: 0 };
  /** When set, introspection answers wait for it (to act while a call is in flight). */
  introspectionGate: Promise<void> | undefined;
  /** Authorization header values seen by the introspection endpoint. */
  readonly introspectionAuth: string[] = [];
  readonly #opts: IdpOptions;
  readonly #hanging = new Set<ServerResponse>();
  readonly #hitWaiters: { kind: keyof FakeIdp['hits']; n: number; resolve: () => void }[] = [];

  constructor(opts: IdpOptions = {}) {
    this.#opts = opts;
    this.server = createServer((req, res) => void this.#handle(req, res));
  }

  static async start(opts: IdpOptions = {}): Promise<FakeIdp> {
    const idp = new FakeIdp(opts);
    idp.server.listen(0, '127.0.0.1');
    await once(idp.server, 'listening');
    idp.issuer = `http://127.0.0.1:${(idp.server.address() as AddressInfo).port}${opts.path ?? ''}`;
    return idp;
  }

  get jwksUri(): string {
    return `${this.issuer}/jwks`;
  }

  /** Resolves once `hits[kind]` reaches `n` (event-driven, no polling sleeps). */
  waitForHits(kind: keyof FakeIdp['hits'], n: number): Promise<void> {
    if (this.hits[kind] >= n) return Promise.resolve();
    return new Promise((resolve) => this.#hitWaiters.push({ kind, n, resolve }));
  }

  #hit(kind: keyof FakeIdp['hits']): void {
    this.hits[kind]++;
    for (let i = this.#hitWaiters.length - 1; i >= 0; i--) {
      const w = this.#hitWaiters[i];
      if (w !== undefined && this.hits[w.kind] >= w.n) {
        this.#hitWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const prefix = this.#opts.path ?? '';
    const full = new URL(req.url ?? '/', 'http://x').pathname;
    if (!full.startsWith(`${prefix}/`)) return void res.writeHead(404).end();
    const path = full.slice(prefix.length);
    if (path === '/.well-known/openid-configuration') {
      this.#hit('discovery');
      return this.#reply(res, this.discoveryMode, {
        issuer: this.discoveryIssuer ?? this.issuer,
        jwks_uri: this.jwksUri,
        introspection_endpoint: `${this.issuer}/introspect`,
        token_endpoint: `${this.issuer}/token`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['ES256'],
      });
    }
    if (path === '/jwks') {
      this.#hit('jwks');
      return this.#reply(res, this.jwksMode, { keys: this.published.map((k) => k.publicJwk) });
    }
    if (path === '/introspect' && req.method === 'POST') {
      this.#hit('introspection');
      const body = await readBody(req);
      this.introspectionAuth.push(req.headers.authorization ?? '');
      const creds = basicCredentials(req.headers.authorization);
      if (this.introspectionMode === 'ok' && (creds?.id !== this.#opts.clientId || creds?.secret !== this.#opts.clientSecret)) {
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_client' }));
        return;
      }
      if (this.introspectionGate !== undefined) await this.introspectionGate;
      const token = new URLSearchParams(body).get('token') ?? '';
      return this.#reply(res, this.introspectionMode, this.introspection.get(token) ?? { active: false });
    }
    res.writeHead(404).end();
  }

  #reply(res: ServerResponse, mode: Mode, body: unknown): void {
    switch (mode) {
      case 'ok':
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        return;
      case 'fail':
        res.writeHead(500, { 'content-type': 'text/plain' }).end('down');
        return;
      case 'redirect':
        res.writeHead(302, { location: `${this.issuer}/jwks` }).end();
        return;
      case 'hang':
        this.#hanging.add(res);
        return;
    }
  }
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined by ":" and base64ed. */
function basicCredentials(header: string | undefined): { id: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header ?? '');
  if (m === null) return undefined;
  const [id, secret] = Buffer.from(m[1] ?? '', 'base64').toString('utf8').split(':');
  const dec = (s: string | undefined): string => decodeURIComponent((s ?? '').replace(/\+/g, ' '));
  return { id: dec(id), secret: dec(secret) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Header members to add or (with `undefined`) drop. */
export type HeaderOverrides = { readonly [name: string]: unknown };

/** Signs `claims` with `key` under `header` (kid and alg default to the key's). */
export function mint(key: SigningKey, claims: Record<string, unknown>, header: HeaderOverrides = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt', ...header }).sign(key.privateKey);
}

/** Signs a payload given as raw JSON text (for duplicate-key and similar cases). */
export function mintRaw(key: SigningKey, rawPayload: string, header: HeaderOverrides = {}): Promise<string> {
  return new CompactSign(new TextEncoder().encode(rawPayload))
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt', ...header })
    .sign(key.privateKey);
}

export function b64url(s: string | Uint8Array): string {
  return Buffer.from(s).toString('base64url');
}
