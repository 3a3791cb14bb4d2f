import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RecordingApp, startRecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import { FrameType, headersFrame, rawH2, requestBlock } from './support/h2raw.ts';
import { startTestIssuer, type TestIssuer } from './support/issuer.ts';
import { h2Once, startWard, type Ward } from './support/ward.ts';

/**
 * `Authorization` parsing (RFC 6750 §2.1, RFC 9110 §11): the credential the sidecar verifies must
 * be the one and only credential the app could read. Duplicates and lists are refused rather
 * than picking one (the parser differential behind Envoy CVE-2021-32777: several values of one
 * field read differently by two components), tokens in URLs are refused (RFC 6750 §2.3,
 * §5.3), and credentials anywhere else are not looked at.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;
let token: string;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('h2c');
  ward = await startWard({ issuer: iss.issuer, app });
  token = iss.token();
});
afterAll(async () => {
  await ward.close();
  await app.close();
  await iss.close();
});
beforeEach(() => {
  app.reset();
});

/** One HTTP/1.1 request with the given raw header lines; returns status and reason. */
async function h1(lines: string, target = '/api/x'): Promise<{ status: number | undefined; reason: string | undefined }> {
  const x = await h1raw(ward.port, `GET ${target} HTTP/1.1\r\nHost: orders\r\n${lines}Connection: close\r\n\r\n`);
  return { status: x.replies[0]?.status, reason: x.replies[0]?.headers['x-ward-reason'] };
}

describe('several credentials — RFC 6750 §2 (one method per request), RFC 9110 §5.3 (field lines combine into a list)', () => {
  it('two Authorization fields over HTTP/1.1 (both valid)', async () => {
    expect(await h1(`Authorization: Bearer ${token}\r\nAuthorization: Bearer ${token}\r\n`)).toEqual({ status: 400, reason: 'ERR_TOKEN_MULTIPLE' });
    expect(app.seen).toEqual([]);
  });

  it('a valid and a junk Authorization field, in either order', async () => {
    expect(await h1(`Authorization: Bearer junk\r\nAuthorization: Bearer ${token}\r\n`)).toEqual({ status: 400, reason: 'ERR_TOKEN_MULTIPLE' });
    expect(await h1(`Authorization: Bearer ${token}\r\nAuthorization: Bearer junk\r\n`)).toEqual({ status: 400, reason: 'ERR_TOKEN_MULTIPLE' });
    expect(app.seen).toEqual([]);
  });

  it('two authorization fields over HTTP/2 (raw HEADERS frame)', async () => {
    const c = await rawH2(ward.port);
    c.write(headersFrame(1, requestBlock('/api/x', [['authorization', `Bearer ${token}`], ['authorization', 'Bearer junk']]), { endStream: true }));
    const f = await c.waitFrame((x) => x.streamId === 1 && (x.type === FrameType.HEADERS || x.type === FrameType.RST_STREAM));
    c.close();
    expect(f?.type).toBe(FrameType.HEADERS);
    expect(ward.lastCode()).toBe('ERR_TOKEN_MULTIPLE');
    expect(app.seen).toEqual([]);
  });

  it('a comma-joined credential list in one field', async () => {
    expect(await h1(`Authorization: Bearer ${token}, Bearer junk\r\n`)).toEqual({ status: 400, reason: 'ERR_TOKEN_MULTIPLE' });
    expect(await h1(`Authorization: Basic dXNlcjpwYXNz, Bearer ${token}\r\n`)).toEqual({ status: 400, reason: 'ERR_TOKEN_MULTIPLE' });
    expect(app.seen).toEqual([]);
  });
});

describe('scheme and spacing — RFC 6750 §2.1 (b64token, 1*SP), RFC 9110 §11.1 (scheme is case-insensitive), §5.5 (OWS)', () => {
  it.each([
    ['bearer (lower case)', `bearer TOKEN`],
    ['BEARER (upper case)', `BEARER TOKEN`],
    ['two spaces after the scheme', `Bearer  TOKEN`],
  ])('%s is accepted', async (_name, value) => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: value.replace('TOKEN', token) });
    expect(r.status).toBe(200);
    expect(app.seen).toHaveLength(1);
  });

  it('leading and trailing OWS around the field value (HTTP/1.1) is accepted', async () => {
    expect(await h1(`Authorization: \t Bearer ${token} \t\r\n`)).toEqual({ status: 200, reason: undefined });
  });

  it.each([
    ['a tab between scheme and token', 'Bearer\tTOKEN'],
    ['no space', 'BearerTOKEN'],
    ['scheme only', 'Bearer'],
    ['empty field', ''],
    ['another scheme (Basic)', 'Basic dXNlcjpwYXNz'],
    ['another scheme carrying the JWT (Token)', 'Token TOKEN'],
    ['DPoP scheme (RFC 9449) with a bearer token', 'DPoP TOKEN'],
    ['two words after the scheme', 'Bearer TOKEN extra'],
    ['a quoted token', 'Bearer "TOKEN"'],
    ['a token with a non-b64token character', 'Bearer TOKEN;x'],
    ['non-ASCII in the token', 'Bearer TOKENé'],
  ])('%s → 401 ERR_TOKEN_MALFORMED', async (_name, value) => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: value.replace('TOKEN', token) });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 401, reason: 'ERR_TOKEN_MALFORMED' });
    expect(r.headers['www-authenticate']).toBe('Bearer realm="orders", error="invalid_token"');
    expect(app.seen).toEqual([]);
  });

  it('an over-long Authorization field is refused before any parsing', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${'a'.repeat(20_000)}` });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 401, reason: 'ERR_TOKEN_TOO_LARGE' });
    expect(app.seen).toEqual([]);
  });
});

describe('tokens outside the Authorization field — RFC 6750 §2.2, §2.3, §5.3 (tokens in URLs leak into logs and Referer)', () => {
  it.each([
    ['access_token', `/api/x?access_token=TOKEN`],
    ['after another parameter', `/api/x?a=1&access_token=TOKEN`],
    ['percent-encoded name', `/api/x?access%5Ftoken=TOKEN`],
    ['+ in the name decoding to nothing special still matched exactly', `/api/x?access_token=TOKEN&x=1`],
    ['on an open route', `/public/x?access_token=TOKEN`],
  ])('in the query (%s) → 400 ERR_TOKEN_IN_QUERY, even with a valid header', async (_name, target) => {
    const r = await h2Once(ward.port, { ':path': target.replace('TOKEN', token), authorization: `Bearer ${token}` });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 400, reason: 'ERR_TOKEN_IN_QUERY' });
    expect(app.seen).toEqual([]);
  });

  it('in a form body (RFC 6750 §2.2 is not supported): no credential, 401 ERR_TOKEN_MISSING', async () => {
    const r = await h2Once(ward.port, { ':method': 'POST', ':path': '/api/x', 'content-type': 'application/x-www-form-urlencoded' }, `access_token=${token}`);
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 401, reason: 'ERR_TOKEN_MISSING' });
    expect(r.headers['www-authenticate']).toBe('Bearer realm="orders"');
    expect(app.seen).toEqual([]);
  });

  it('in a cookie, or in Proxy-Authorization: not a credential for the sidecar', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/x', cookie: `access_token=${token}`, 'proxy-authorization': `Bearer ${token}` });
    expect({ status: r.status, reason: r.reason }).toEqual({ status: 401, reason: 'ERR_TOKEN_MISSING' });
    expect(app.seen).toEqual([]);
  });

  it('Proxy-Authorization is never passed to the app', async () => {
    const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${token}`, 'proxy-authorization': 'Basic c2VjcmV0' });
    expect(r.status).toBe(200);
    expect(app.seen[0]?.headers['proxy-authorization']).toBeUndefined();
  });
});

describe('header syntax around the credential — HTTP/1.1 parser (llhttp) strictness', () => {
  it.each([
    ['CR inside the value', `Authorization: Bearer ${'T'}\rx\r\n`],
    ['NUL inside the value', `Authorization: Bearer T\u0000\r\n`],
    ['obs-fold between scheme and token', `Authorization: Bearer\r\n T\r\n`],
    ['whitespace before the colon', `Authorization : Bearer T\r\n`],
  ])('%s → 400, nothing forwarded', async (_name, line) => {
    const r = await h1(line.replace('T', token));
    expect(r.status).toBe(400);
    expect(r.reason).toBe('ERR_REQUEST_INVALID');
    expect(app.seen).toEqual([]);
  });
});
