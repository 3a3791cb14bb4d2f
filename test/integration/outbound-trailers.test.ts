import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound } from '../../src/outbound/server.ts';
import { type RecordingApp, startRecordingApp } from '../security/support/app.ts';
import { h1raw } from '../security/support/h1raw.ts';

/**
 * docs/outbound.md "What the destination receives": fields with the identity prefix (`x-ward-*`)
 * removed. The header scan does it; request trailers (relayed to h2c destinations and h2c
 * pass-through targets) keep them, because the outbound relays are created without
 * `identityPrefix` (routes.ts #relay; found in review, fixed), while the inbound relay strips them (forward.ts
 * createForwarder). An app (or a caller's trailers the app relays) can thus send
 * `x-ward-subject: root` to a destination.
 */

let dest: RecordingApp;
let other: RecordingApp;
let egress: Outbound;

beforeAll(async () => {
  dest = await startRecordingApp('h2c');
  other = await startRecordingApp('h2c');
  egress = await createOutbound({
    service: 'orders',
    config: outboundConfigSchema.parse({
      listen: { host: '127.0.0.1', port: 0 },
      passthrough: true,
      destinations: [{ name: 'payments', url: `http://127.0.0.1:${dest.port}`, protocol: 'h2c', resource: 'urn:ward:payments' }],
    }),
    identityPrefix: 'x-ward-',
    maxTokenBytes: 8192,
    extractBearer,
    tokens: { token: () => ({ ok: true, token: 'EXCHANGED', authorization: 'Bearer EXCHANGED', via: 'exchange' }) },
    log: silentLogger,
    clock: Date.now,
  });
});
afterAll(async () => {
  await egress.close();
  await dest.close();
  await other.close();
});

async function h2call(authority: string): Promise<void> {
  const c = http2.connect(`http://127.0.0.1:${egress.port}`);
  c.on('error', () => {});
  try {
    const req = c.request({ ':method': 'POST', ':path': '/charge', ':authority': authority, authorization: 'Bearer APPTOKEN', te: 'trailers' }, { waitForTrailers: true });
    req.on('wantTrailers', () => req.sendTrailers({ 'x-ward-subject': 'root', 'x-ward-claims': 'e30', 'x_ward_issuer': 'evil' }));
    req.end('body');
    req.resume();
    await new Promise((r) => req.on('close', r));
  } finally {
    c.close();
  }
}

describe('egress request trailers and the identity prefix', () => {
  it('h2c app -> declared h2c destination: x-ward-* trailers do not leave the pod', async () => {
    await h2call('payments');
    await new Promise((r) => setTimeout(r, 100));
    expect(dest.seen).toHaveLength(1);
    expect(dest.seen[0]?.headers['authorization']).toBe('Bearer EXCHANGED');
    const t = dest.seen[0]?.trailers ?? {};
    expect(Object.keys(t).filter((k) => k.startsWith('x-ward-') || k.startsWith('x_ward_'))).toEqual([]);
  });

  it('HTTP/1.1 chunked trailers -> declared h2c destination: x-ward-* trailers do not leave the pod', async () => {
    dest.reset();
    await h1raw(egress.port, `POST /charge HTTP/1.1\r\nHost: payments\r\nAuthorization: Bearer APPTOKEN\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\nX-Ward-Subject: root\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    expect(dest.seen).toHaveLength(1);
    expect(dest.seen[0]?.trailers?.['x-ward-subject']).toBeUndefined();
  });

  it('h2c pass-through: x-ward-* trailers do not leave the pod either', async () => {
    await h2call(`127.0.0.1:${other.port}`);
    await new Promise((r) => setTimeout(r, 100));
    expect(other.seen).toHaveLength(1);
    expect(other.seen[0]?.headers['authorization']).toBeUndefined();
    expect(other.seen[0]?.trailers?.['x-ward-subject']).toBeUndefined();
  });
});
