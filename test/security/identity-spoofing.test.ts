import http2 from 'node:http2';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import type { TestIssuer } from './support/issuer.ts';
import { eventually, h2Once, startTwoWards, type TwoWards, type Ward } from './support/ward.ts';

/**
 * Identity-header spoofing: the app trusts `x-ward-*` because only the sidecar sets them, so no
 * caller-supplied field with that prefix may ever reach it, by any route — header, repeated
 * header, other case, HTTP/2 or HTTP/1.1, request trailers. Istio's equivalent is the
 * `x-envoy-*` stripping (Envoy CVE-2024-45806: internal headers trusted from outside). Also: responses from the app
 * cannot pass for the sidecar's own denials (`x-ward-reason`).
 */

let token: string;

let rig: TwoWards;
let iss: TestIssuer;
let h2app: RecordingApp;
let h1app: RecordingApp;
let wardH2: Ward;
let wardH1: Ward;

beforeAll(async () => {
  rig = await startTwoWards();
  ({ iss, h2app, h1app, wardH2, wardH1 } = rig);
  token = iss.token({ sub: 'alice' });
});
afterAll(() => rig.close());
beforeEach(() => rig.reset());

const SPOOF = {
  'x-ward-subject': 'root',
  'x-ward-issuer': 'https://evil.example',
  'x-ward-claims': Buffer.from('{"sub":"root","scope":"orders.admin"}').toString('base64url'),
  'x-ward-decision-id': 'forged',
  'x-ward-anything': 'forged',
};

function expectOnlySidecarIdentity(seen: Record<string, unknown> | undefined, subject: string | undefined): void {
  expect(seen).toBeDefined();
  expect(seen?.['x-ward-subject']).toBe(subject);
  expect(seen?.['x-ward-anything']).toBeUndefined();
  if (subject === undefined) {
    expect(seen?.['x-ward-issuer']).toBeUndefined();
    expect(seen?.['x-ward-claims']).toBeUndefined();
  } else {
    expect(seen?.['x-ward-issuer']).toBe(iss.issuer);
    expect(JSON.parse(Buffer.from(String(seen?.['x-ward-claims']), 'base64url').toString()).sub).toBe(subject);
  }
  expect(seen?.['x-ward-decision-id']).not.toBe('forged');
}

describe.each([
  ['h2c app', () => wardH2, () => h2app],
  ['HTTP/1.1 app', () => wardH1, () => h1app],
] as const)('identity-header spoofing (Envoy CVE-2024-45806: internal x-envoy-* headers trusted from outside): caller x-ward-* never reaches the %s', (_name, ward, app) => {
  it('HTTP/2 caller with a valid token: the app sees the sidecar\'s values only', async () => {
    const r = await h2Once(ward().port, { ':path': '/api/who', authorization: `Bearer ${token}`, ...SPOOF });
    expect(r.status).toBe(200);
    expectOnlySidecarIdentity(app().seen[0]?.headers, 'alice');
  });

  it('anonymous caller on an open route: none of the spoofed fields survive', async () => {
    const r = await h2Once(ward().port, { ':path': '/public/who', ...SPOOF });
    expect(r.status).toBe(200);
    expectOnlySidecarIdentity(app().seen[0]?.headers, undefined);
  });

  it('HTTP/1.1 caller, mixed case and repeated fields', async () => {
    const x = await h1raw(
      ward().port,
      `GET /api/who HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nX-Ward-Subject: root\r\nX-WARD-SUBJECT: root2\r\nx-ward-subject: root3\r\nX-Ward-Claims: e30\r\nx-WaRd-anything: forged\r\nConnection: close\r\n\r\n`,
    );
    expect(x.replies[0]?.status).toBe(200);
    expectOnlySidecarIdentity(app().seen[0]?.headers, 'alice');
  });

  it('`_` for `-` (x_ward_subject: CGI-style apps read it as x-ward-subject): stripped from HTTP/1.1 and HTTP/2 callers (regression)', async () => {
    const x = await h1raw(ward().port, 'GET /public/x HTTP/1.1\r\nHost: orders\r\nX_Ward_Subject: root\r\nX_WARD_ISSUER: https://evil.example\r\nConnection: close\r\n\r\n');
    expect(x.replies[0]?.status).toBe(200);
    const r = await h2Once(ward().port, { ':path': '/public/x', x_ward_subject: 'root', 'x-ward_claims': 'e30' });
    expect(r.status).toBe(200);
    expect(app().seen).toHaveLength(2);
    for (const seen of app().seen) {
      const cgi = Object.keys(seen.headers).filter((n) => n.toLowerCase().replaceAll('_', '-').startsWith('x-ward-') && n !== 'x-ward-decision-id');
      expect(cgi).toEqual([]);
    }
  });

  it('HTTP/2 request trailers carrying x-ward-* and authorization are not relayed to the app (RFC 9110 §6.5.1)', async () => {
    await new Promise<void>((resolve, reject) => {
      const session = http2.connect(ward().url);
      session.on('error', reject);
      const s = session.request({ ':method': 'POST', ':path': '/api/trailers', ':authority': 'orders', authorization: `Bearer ${token}` }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-ward-subject': 'root', 'x-ward-issuer': 'https://evil.example', x_ward_claims: 'e30', authorization: 'Bearer forged', 'x-note': 'kept' }));
      s.on('response', () => {});
      s.resume();
      s.on('error', () => {});
      s.on('close', () => {
        session.close();
        resolve();
      });
      s.end('body');
    });
    await eventually(() => app().seen.length === 1, 2000, 'request seen');
    await new Promise((r) => setTimeout(r, 50));
    const seen = app().seen[0];
    expectOnlySidecarIdentity(seen?.headers, 'alice');
    const t = seen?.trailers ?? {};
    expect(t['x-ward-subject']).toBeUndefined();
    expect(t['x-ward-issuer']).toBeUndefined();
    expect(t['x_ward_claims']).toBeUndefined();
    expect(t['authorization']).toBeUndefined();
    if (app().protocol === 'h2c') expect(t['x-note']).toBe('kept');
  });

  it('HTTP/1.1 chunked trailers carrying x-ward-* are not relayed to the app (RFC 9110 §6.5.1, RFC 9112 §7.1.2)', async () => {
    const x = await h1raw(
      ward().port,
      `POST /api/trailers HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\nX-Ward-Subject: root\r\nAuthorization: Bearer forged\r\nX-Note: kept\r\n\r\n`,
    );
    expect(x.replies[0]?.status).toBe(200);
    await new Promise((r) => setTimeout(r, 50));
    const seen = app().seen[0];
    expectOnlySidecarIdentity(seen?.headers, 'alice');
    expect(seen?.trailers?.['x-ward-subject']).toBeUndefined();
    expect(seen?.trailers?.['authorization']).toBeUndefined();
  });
});

describe('status and trailer injection from the app (response-field forging): the app cannot speak for the sidecar', () => {
  it('HTTP: the response carries the sidecar\'s decision id, and no x-ward-reason on an allowed call', async () => {
    const r = await h2Once(wardH2.port, { ':path': '/inject/x', authorization: `Bearer ${token}` });
    expect(r.status).toBe(200);
    expect(r.headers['x-ward-decision-id']).toBe(wardH2.decisions.at(-1)?.decisionId);
    expect(r.headers['x-ward-reason']).toBeUndefined();
    expect(r.trailers['x-ward-reason']).toBeUndefined();
  });

  it('HTTP/1.1 app → HTTP/1.1 caller: the same', async () => {
    const x = await h1raw(wardH1.port, `GET /inject/x HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
    expect(x.replies[0]?.status).toBe(200);
    expect(x.replies[0]?.headers['x-ward-reason']).toBeUndefined();
    expect(x.replies[0]?.headers['x-ward-decision-id']).toBe(wardH1.decisions.at(-1)?.decisionId);
  });

  it('gRPC: trailers from the app cannot forge a sidecar denial', async () => {
    const r = await h2Once(wardH2.port, { ':method': 'POST', ':path': '/inject/grpc', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` }, Buffer.from([0, 0, 0, 0, 0]));
    expect(r.headers['x-ward-reason']).toBeUndefined();
    expect(r.trailers['x-ward-reason']).toBeUndefined();
    expect(r.trailers['grpc-status']).toBe('0');
  });
});
