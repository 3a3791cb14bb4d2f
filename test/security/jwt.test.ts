import { createHmac, createPublicKey } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { h2Once, startWard, type Ward } from './support/ward.ts';

/**
 * JWT structure, signature and claim attacks against the whole sidecar (authn + policy +
 * listeners), with tokens signed by keys the sidecar really trusts (support/issuer.ts), so a
 * refusal is the check under test and not an unknown key. Each case names its source: RFC 8725
 * (JWT BCP) sections, RFC 7515/7519/9068, and the library CVEs the class comes from. Every case
 * asserts the status, `x-ward-reason`, and that the app saw nothing.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('h2c');
  ward = await startWard({ issuer: iss.issuer, app });
});
afterAll(async () => {
  // STYLE habit 2, SECURITY.md: tokens are never logged (issuer, kid and a hash are). The logs
  // are at debug level here, where every refusal is logged with its detail.
  const logs = ward.logs.join('\n');
  expect(ward.logs.length).toBeGreaterThan(50);
  for (const t of presented) {
    const sig = t.slice(t.lastIndexOf('.') + 1);
    if (sig.length >= 16) expect(logs.includes(sig)).toBe(false);
    const body = t.slice(t.indexOf('.') + 1, t.lastIndexOf('.'));
    if (body.length >= 16) expect(logs.includes(body)).toBe(false);
  }
  await ward.close();
  await app.close();
  await iss.close();
});
beforeEach(() => {
  app.reset();
});

const b64 = (v: string | Buffer): string => Buffer.from(v).toString('base64url');
const now = (): number => Math.floor(Date.now() / 1000);

/** Every token presented in this file: none may ever appear in the sidecar's log. */
const presented = new Set<string>();

async function expectDenied(token: string, status: number, reason: string, path = '/api/x'): Promise<void> {
  presented.add(token);
  const r = await h2Once(ward.port, { ':path': path, authorization: `Bearer ${token}` });
  expect({ status: r.status, reason: r.reason }).toEqual({ status, reason });
  expect(app.seen).toEqual([]);
  expect(ward.lastCode()).toBe(reason);
}

async function expectAllowed(token: string, path = '/api/x'): Promise<void> {
  presented.add(token);
  const r = await h2Once(ward.port, { ':path': path, authorization: `Bearer ${token}` });
  expect({ status: r.status, reason: r.reason }).toEqual({ status: 200, reason: undefined });
  expect(app.seen).toHaveLength(1);
}

function header(over: Record<string, unknown> = {}, key: 'rs' | 'es' | 'ed' = 'rs'): string {
  const alg = { rs: 'RS256', es: 'ES256', ed: 'EdDSA' }[key];
  return JSON.stringify({ alg, typ: 'at+jwt', kid: iss.kid(key), ...over });
}

it('baseline: a valid token of each key type is accepted (so every refusal below is the attack being caught)', async () => {
  for (const k of ['rs', 'es', 'ed'] as const) {
    app.reset();
    await expectAllowed(iss.token({}, {}, k));
  }
});

describe('algorithm attacks — RFC 8725 §2.1, §3.1; CVE-2015-9235 (jsonwebtoken), CVE-2016-10555 (jwt-simple), CVE-2016-5431 (php-jose)', () => {
  it.each(['none', 'None', 'NONE', 'nOnE'])('alg %j, no signature', async (alg) => {
    const input = `${b64(header({ alg }))}.${b64(JSON.stringify(iss.claims()))}`;
    await expectDenied(`${input}.`, 401, 'ERR_TOKEN_ALG_NOT_ALLOWED');
  });

  it('alg none with a (valid RS256) signature still attached', async () => {
    const input = `${b64(header({ alg: 'none' }))}.${b64(JSON.stringify(iss.claims()))}`;
    await expectDenied(`${input}.${iss.signature(input)}`, 401, 'ERR_TOKEN_ALG_NOT_ALLOWED');
  });

  it.each([
    ['the RSA public key PEM', () => createPublicKey({ key: iss.publicJwk('rs'), format: 'jwk' }).export({ format: 'pem', type: 'spki' })],
    ['the JWK modulus', () => Buffer.from(String(iss.publicJwk('rs').n), 'base64url')],
    ['the JWK JSON', () => JSON.stringify(iss.publicJwk('rs'))],
  ])('key confusion: HS256 keyed with %s', async (_name, secret) => {
    const input = `${b64(header({ alg: 'HS256' }))}.${b64(JSON.stringify(iss.claims()))}`;
    const sig = createHmac('sha256', secret()).update(input).digest('base64url');
    await expectDenied(`${input}.${sig}`, 401, 'ERR_TOKEN_ALG_NOT_ALLOWED');
  });

  it('an algorithm the policy does not list (PS256) with a valid RSA-PSS signature', async () => {
    const input = `${b64(header({ alg: 'PS256' }))}.${b64(JSON.stringify(iss.claims()))}`;
    await expectDenied(`${input}.${b64('x'.repeat(256))}`, 401, 'ERR_TOKEN_ALG_NOT_ALLOWED');
  });

  it('alg/key mismatch: ES256 header naming the RSA key (RFC 8725 §3.1: the key fixes the algorithm)', async () => {
    await expectDenied(iss.signRaw(header({ alg: 'ES256', kid: iss.kid('rs') }), JSON.stringify(iss.claims()), 'es'), 401, 'ERR_TOKEN_KEY_UNKNOWN');
  });

  it('alg not a string', async () => {
    await expectDenied(iss.signRaw(header({ alg: ['RS256'] }), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_MALFORMED');
  });
});

describe('keys chosen by the token — RFC 8725 §3.10; CVE-2018-0114 (node-jose embedded jwk), jku/x5u SSRF', () => {
  it.each([
    ['jwk', () => ({ jwk: iss.publicJwk('rs') })],
    ['jku', () => ({ jku: 'http://127.0.0.1:9/attacker-jwks' })],
    ['x5u', () => ({ x5u: 'http://127.0.0.1:9/attacker.pem' })],
    ['x5c', () => ({ x5c: ['MIIB'] })],
  ])('header %s is refused outright, even with an otherwise valid signature', async (_name, extra) => {
    await expectDenied(iss.signRaw(header(extra()), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_MALFORMED');
  });

  it('embedded jwk with an off-curve EC point (invalid-curve class, CVE-2017-16007 node-jose): refused before any use', async () => {
    const jwk = { kty: 'EC', crv: 'P-256', x: b64(Buffer.alloc(32, 1)), y: b64(Buffer.alloc(32, 2)) };
    await expectDenied(iss.signRaw(header({ jwk }, 'es'), JSON.stringify(iss.claims()), 'es'), 401, 'ERR_TOKEN_MALFORMED');
  });
});

describe('kid tricks — RFC 8725 §3.10 (kid is untrusted input: path traversal, SQL injection into key lookups)', () => {
  it.each([
    ['path traversal', '../../../../../dev/null'],
    ['SQL injection', "x' UNION SELECT 'secret' --"],
    ['empty string', ''],
    ['a very long kid', 'k'.repeat(4000)],
    ['the kid of another key type', 'es-1'],
  ])('%s → key unknown, no crash', async (_name, kid) => {
    await expectDenied(iss.signRaw(header({ kid }), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_KEY_UNKNOWN');
  });

  it.each([
    ['a number', 7],
    ['an object', { $ne: null }],
    ['null', null],
  ])('kid as %s → malformed', async (_name, kid) => {
    await expectDenied(iss.signRaw(header({ kid }), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_MALFORMED');
  });
});

describe('signature tampering — RFC 8725 §3.3 (validate all cryptographic operations), §2.6 (multiple encodings)', () => {
  it('payload changed after signing (scope escalation)', async () => {
    const [h, , s] = iss.token().split('.');
    await expectDenied(`${h}.${b64(JSON.stringify(iss.claims({ scope: 'orders.read orders.admin' })))}.${s}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('header changed after signing (kid swapped to another valid kid)', async () => {
    const [, p, s] = iss.token().split('.');
    await expectDenied(`${b64(header({ typ: 'AT+JWT' }))}.${p}.${s}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('truncated signature', async () => {
    const t = iss.token();
    await expectDenied(t.slice(0, -14), 401, 'ERR_TOKEN_SIGNATURE'); // 342 → 328 characters: whole bytes, canonical
  });

  it('empty signature on an RS256 token', async () => {
    const t = iss.token();
    await expectDenied(t.slice(0, t.lastIndexOf('.') + 1), 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('signature of another valid token', async () => {
    const [h, p] = iss.token({ sub: 'mallory' }).split('.');
    const s = iss.token({ sub: 'alice' }).split('.')[2];
    await expectDenied(`${h}.${p}.${s}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('ECDSA "psychic signature" r = s = 0 (CVE-2022-21449)', async () => {
    const input = `${b64(header({}, 'es'))}.${b64(JSON.stringify(iss.claims()))}`;
    await expectDenied(`${input}.${b64(Buffer.alloc(64))}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('ECDSA r = s = n (the curve order: reduces to zero mod n)', async () => {
    const n = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
    const input = `${b64(header({}, 'es'))}.${b64(JSON.stringify(iss.claims()))}`;
    await expectDenied(`${input}.${b64(Buffer.concat([n, n]))}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('ECDSA signature in DER instead of the JWS fixed-width encoding (RFC 7518 §3.4)', async () => {
    const input = `${b64(header({}, 'es'))}.${b64(JSON.stringify(iss.claims()))}`;
    const raw = Buffer.from(iss.signature(input, 'es'), 'base64url');
    // r ‖ s → SEQUENCE { INTEGER r, INTEGER s }
    const int = (b: Buffer): Buffer => {
      const v = (b[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
      return Buffer.concat([Buffer.from([2, v.length]), v]);
    };
    const seq = Buffer.concat([int(raw.subarray(0, 32)), int(raw.subarray(32))]);
    await expectDenied(`${input}.${b64(Buffer.concat([Buffer.from([0x30, seq.length]), seq]))}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('EdDSA signature with s ≥ L (RFC 8032 §5.1.7 malleability)', async () => {
    const input = `${b64(header({}, 'ed'))}.${b64(JSON.stringify(iss.claims()))}`;
    const sig = Buffer.from(iss.signature(input, 'ed'), 'base64url');
    sig[63] = (sig[63] as number) | 0xf0;
    await expectDenied(`${input}.${b64(sig)}`, 401, 'ERR_TOKEN_SIGNATURE');
  });

  it('non-canonical base64url in the signature (unused trailing bits set): refused, one token has one spelling', async () => {
    const t = iss.token({}, {}, 'es'); // 64-byte signature: 86 characters, the last carries 4 unused bits
    const last = t.at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet[alphabet.indexOf(last) | 0x3] as string;
    expect(twin).not.toBe(last);
    await expectDenied(`${t.slice(0, -1)}${twin}`, 401, 'ERR_TOKEN_MALFORMED');
  });
});

describe('serialization — RFC 7515 §7.1, §5.2; RFC 8725 §2.6, §3.7 (UTF-8); "JSON interoperability vulnerabilities" (Bishop Fox 2021); CVE-2022-39227 (python-jwt mixed serialization)', () => {
  it.each([
    ['two segments', () => iss.token().split('.').slice(0, 2).join('.')],
    ['four segments', () => `${iss.token()}.x`],
    ['JWE compact (five segments)', () => `${b64('{"alg":"RSA-OAEP","enc":"A256GCM"}')}.a.b.c.d`],
    ['empty header segment', () => `.${iss.token().split('.').slice(1).join('.')}`],
    ['padding characters', () => `${iss.token()}==`],
    ['base64 (not url) alphabet', () => iss.token().replace(/-/g, '+').replace(/_/g, '/')],
    ['JSON serialization in the header field', () => JSON.stringify({ payload: 'x', signatures: [] })],
  ])('%s → malformed', async (_name, make) => {
    const t = make();
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${t}` });
    expect([400, 401]).toContain(r.status);
    expect(['ERR_TOKEN_MALFORMED', 'ERR_TOKEN_SIGNATURE', 'ERR_TOKEN_MULTIPLE']).toContain(r.reason);
    expect(app.seen).toEqual([]);
  });

  it.each([
    ['duplicate alg in the header', '{"alg":"none","alg":"RS256","typ":"at+jwt","kid":"KID"}', null],
    ['duplicate sub in the payload (parser differential)', null, (c: string) => c.replace('"sub":"alice"', '"sub":"alice","sub":"admin"')],
    ['__proto__ member in the payload (prototype pollution)', null, (c: string) => c.replace('{', '{"__proto__":{"scope":"orders.admin"},')],
    ['nesting 40 levels deep', null, (c: string) => c.replace('{', `{"deep":${'['.repeat(40)}${']'.repeat(40)},`)],
    ['a number outside double range (exp 1e999)', null, (c: string) => c.replace(/"exp":\d+/, '"exp":1e999')],
    ['a byte-order mark before the payload', null, (c: string) => `\uFEFF${c}`],
    ['a header that is an array', '["RS256"]', null],
    ['a payload that is null', null, () => 'null'],
    ['trailing garbage after the payload object', null, (c: string) => `${c}{}`],
  ])('%s → malformed', async (_name, rawHeader, patchPayload) => {
    const h = rawHeader === null ? header() : rawHeader.replace('KID', iss.kid('rs'));
    const claims = JSON.stringify(iss.claims());
    const p = patchPayload === null ? claims : patchPayload(claims);
    await expectDenied(iss.signRaw(h, p), 401, 'ERR_TOKEN_MALFORMED');
  });

  it('invalid UTF-8 in the payload (RFC 8725 §3.7)', async () => {
    const input = `${b64(header())}.${b64(Buffer.concat([Buffer.from('{"sub":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]))}`;
    await expectDenied(`${input}.${iss.signature(input)}`, 401, 'ERR_TOKEN_MALFORMED');
  });

  it('crit names an extension ward does not implement (RFC 7515 §4.1.11)', async () => {
    await expectDenied(iss.signRaw(header({ crit: ['exp'], exp: 1 }), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_MALFORMED');
  });

  it('unencoded payload option b64: false (RFC 7797)', async () => {
    await expectDenied(iss.signRaw(header({ b64: false, crit: ['b64'] }), JSON.stringify(iss.claims())), 401, 'ERR_TOKEN_MALFORMED');
  });

  it('a token longer than maxTokenBytes is refused unparsed', async () => {
    await expectDenied(iss.token({ pad: 'p'.repeat(9000) }), 401, 'ERR_TOKEN_TOO_LARGE');
  });
});

describe('time claims — RFC 7519 §4.1.4–6, RFC 9068 §2.2 (exp required); skew is 30 s', () => {
  it.each([
    ['expired a minute ago', { exp: now() - 60 }, 'ERR_TOKEN_EXPIRED'],
    ['expired long ago', { exp: 1 }, 'ERR_TOKEN_EXPIRED'],
    ['negative exp', { exp: -1 }, 'ERR_TOKEN_EXPIRED'],
    ['exp missing', { exp: undefined }, 'ERR_TOKEN_CLAIMS'],
    ['exp as a string', { exp: String(now() + 300) }, 'ERR_TOKEN_CLAIMS'],
    ['exp null', { exp: null }, 'ERR_TOKEN_CLAIMS'],
    ['exp true', { exp: true }, 'ERR_TOKEN_CLAIMS'],
    ['nbf a minute ahead', { nbf: now() + 60 }, 'ERR_TOKEN_NOT_YET_VALID'],
    ['nbf as a string', { nbf: '0' }, 'ERR_TOKEN_CLAIMS'],
    ['iat a minute ahead', { iat: now() + 60 }, 'ERR_TOKEN_NOT_YET_VALID'],
    ['iat as an object', { iat: { $gt: 0 } }, 'ERR_TOKEN_CLAIMS'],
  ])('%s → %s', async (_name, over, reason) => {
    await expectDenied(iss.token(over), 401, reason);
  });

  it.each([
    ['exp 10 s ago (inside the skew)', { exp: now() - 10 }],
    ['nbf 10 s ahead (inside the skew)', { nbf: now() + 10 }],
    ['fractional times', { exp: now() + 300.5, iat: now() - 0.5 }],
  ])('%s is accepted', async (_name, over) => {
    await expectAllowed(iss.token(over));
  });
});

describe('issuer and audience — RFC 8725 §3.8, §3.9; RFC 9068 §4 (issuer compared exactly, audience always checked)', () => {
  it.each([
    ['aud missing', { aud: undefined }],
    ['aud for another service', { aud: 'urn:ward:payments' }],
    ['aud empty array', { aud: [] }],
    ['aud in another case', { aud: 'URN:WARD:ORDERS' }],
    ['aud with a trailing space', { aud: 'urn:ward:orders ' }],
    ['aud as an object', { aud: { 'urn:ward:orders': true } }],
    ['aud array of non-strings', { aud: [1, null, ['urn:ward:orders']] }],
  ])('%s → ERR_TOKEN_AUDIENCE', async (_name, over) => {
    await expectDenied(iss.token(over), 401, 'ERR_TOKEN_AUDIENCE');
  });

  it('aud as an array holding the service among others is accepted', async () => {
    await expectAllowed(iss.token({ aud: ['urn:ward:payments', 'urn:ward:orders'] }));
  });

  it.each([
    ['iss missing', { iss: undefined }],
    ['iss with a trailing slash', { iss: `${'ISS'}/` }],
    ['iss in upper case', { iss: 'ISS-UPPER' }],
    ['an untrusted issuer signing with a trusted key', { iss: 'https://evil.example' }],
    ['iss as an array', { iss: ['ISS'] }],
  ])('%s → ERR_TOKEN_ISSUER_UNKNOWN', async (_name, over) => {
    const o: Record<string, unknown> = { ...over };
    if (o['iss'] === 'ISS/') o['iss'] = `${iss.issuer}/`;
    if (o['iss'] === 'ISS-UPPER') o['iss'] = iss.issuer.toUpperCase();
    if (Array.isArray(o['iss'])) o['iss'] = [iss.issuer];
    await expectDenied(iss.token(o), 401, 'ERR_TOKEN_ISSUER_UNKNOWN');
  });
});

describe('token type — RFC 9068 §4, RFC 8725 §2.8 (cross-JWT confusion: ID tokens, logout tokens as access tokens), §3.11', () => {
  it.each([
    ['typ missing', { typ: undefined }],
    ['typ JWT (an ID token)', { typ: 'JWT' }],
    ['typ logout+jwt', { typ: 'logout+jwt' }],
    ['typ with a parameter', { typ: 'at+jwt; q=1' }],
    ['typ as a number', { typ: 1 }],
  ])('%s → refused', async (_name, h) => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${iss.token({}, h)}` });
    expect(r.status).toBe(401);
    expect(['ERR_TOKEN_TYPE', 'ERR_TOKEN_MALFORMED']).toContain(r.reason);
    expect(app.seen).toEqual([]);
  });

  it('an ID-token shaped claim set (aud = client id, nonce) with typ JWT → ERR_TOKEN_TYPE', async () => {
    await expectDenied(iss.token({ aud: 'frontend', nonce: 'n', azp: 'frontend' }, { typ: 'JWT' }), 401, 'ERR_TOKEN_TYPE');
  });

  it.each([['AT+JWT'], ['application/at+jwt']])('typ %j is the same media type (RFC 7515 §4.1.9) and accepted', async (typ) => {
    await expectAllowed(iss.token({}, { typ }));
  });
});

describe('subject and claim shapes — header injection through claims, prototype keys, huge and nested claim sets', () => {
  it.each([
    ['CR LF in sub (response splitting into identity headers)', { sub: 'alice\r\nx-ward-subject: root' }],
    ['NUL in sub', { sub: 'alice\u0000root' }],
    ['non-ASCII sub', { sub: 'ålice' }],
    ['leading space in sub', { sub: ' alice' }],
    ['sub as a number', { sub: 42 }],
    ['sub empty', { sub: '' }],
    ['sub and client_id missing', { sub: undefined, client_id: undefined }],
    ['scope as an array', { scope: ['orders.read'] }],
    ['act chain 9 deep (RFC 8693 §4.1)', { act: JSON.parse(`${'{"sub":"a","act":'.repeat(8)}{"sub":"z"}${'}'.repeat(8)}`) }],
    ['act without sub', { act: { client_id: 'x' } }],
  ])('%s → ERR_TOKEN_CLAIMS', async (_name, over) => {
    await expectDenied(iss.token(over), 401, 'ERR_TOKEN_CLAIMS');
  });

  it('"constructor" and "prototype" claims are plain data: no escalation, Object.prototype untouched', async () => {
    await expectAllowed(iss.token({ constructor: { prototype: { scope: 'orders.admin', polluted: true } }, prototype: { polluted: true } }));
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(app.seen[0]?.headers['x-ward-subject']).toBe('alice');
  });

  it('a claim set near maxTokenBytes (many claims) is accepted and passed on whole', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 120; i++) many[`c${i}`] = `v${i}`.padEnd(20, 'x');
    await expectAllowed(iss.token(many));
    const claims = JSON.parse(Buffer.from(String(app.seen[0]?.headers['x-ward-claims']), 'base64url').toString()) as Record<string, unknown>;
    expect(claims['c119']).toBe(many['c119']);
  });

  it('scope that only contains the needed scope as a substring → ERR_SCOPE_INSUFFICIENT (403)', async () => {
    await expectDenied(iss.token({ scope: 'orders.readonly xorders.read' }), 403, 'ERR_SCOPE_INSUFFICIENT');
  });

  it('a token presented on an open route must still be valid (an invalid token is not "anonymous")', async () => {
    await expectDenied(iss.token({ exp: 1 }), 401, 'ERR_TOKEN_EXPIRED', '/public/x');
  });
});

describe('key material served by the trusted JWKS — RFC 8725 §3.4 (validate cryptographic inputs)', () => {
  it('an off-curve EC key and a symmetric key in the JWKS are never used; a token naming them is refused, the rest keep working', async () => {
    iss.extraJwks.push(
      { kty: 'EC', crv: 'P-256', kid: 'bad-ec', alg: 'ES256', x: b64(Buffer.alloc(32, 1)), y: b64(Buffer.alloc(32, 2)) },
      { kty: 'oct', kid: 'bad-oct', alg: 'HS256', k: b64('secret') },
    );
    try {
      const input = `${b64(header({ kid: 'bad-ec' }, 'es'))}.${b64(JSON.stringify(iss.claims()))}`;
      await expectDenied(`${input}.${iss.signature(input, 'es')}`, 401, 'ERR_TOKEN_KEY_UNKNOWN');
      const hs = `${b64(header({ alg: 'HS256', kid: 'bad-oct' }))}.${b64(JSON.stringify(iss.claims()))}`;
      app.reset();
      await expectDenied(`${hs}.${createHmac('sha256', 'secret').update(hs).digest('base64url')}`, 401, 'ERR_TOKEN_ALG_NOT_ALLOWED');
      app.reset();
      await expectAllowed(iss.token({}, {}, 'es'));
    } finally {
      iss.extraJwks.length = 0;
    }
  });
});
