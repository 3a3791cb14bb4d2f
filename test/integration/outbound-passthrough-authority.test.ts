import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Outbound } from '../../src/outbound/server.ts';
import { type AppEvents, type RecordingApp, startH1App, startH2App } from '../unit/inbound/harness.ts';
import { startEgress } from '../support/egress.ts';

/**
 * docs/outbound.md "Pass-through": a call to an undeclared name goes to "exactly the host and port
 * written". The pass-through URL was built as `http://` + host + `:` + port, rejecting only
 * userinfo and a path, so a host part ending in `?` or `#` (which ends an authority, RFC 3986
 * §3.2) moved `:port` into the query or fragment: the call went to port 80 of that host while the
 * loop check judged the port the app wrote (`Host: 127.0.0.1#:81` passed it with the egress
 * listener on 80). Found in review (sixteenth session); regression.
 */

let h1App: RecordingApp & AppEvents;
let h2App: RecordingApp & AppEvents;
let egress: Outbound;

beforeAll(async () => {
  h1App = await startH1App();
  h2App = await startH2App();
  egress = await startEgress({ passthrough: true, destinations: [] });
});
afterAll(async () => {
  await egress.close();
  await h1App.close();
  await h2App.close();
});

function h1Get(host: string): Promise<{ status: number; reason: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: egress.port, path: '/x', headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-ward-reason'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function h2Get(authority: string): Promise<{ status: number; reason: unknown }> {
  const client = http2.connect(`http://127.0.0.1:${egress.port}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = client.request({ ':method': 'GET', ':path': '/x', ':authority': authority });
      let r = { status: 0, reason: undefined as unknown };
      req.on('response', (h) => {
        r = { status: Number(h[':status']), reason: h['x-ward-reason'] };
      });
      req.on('end', () => resolve(r));
      req.on('error', reject);
      req.resume();
      req.end();
    });
  } finally {
    client.close();
  }
}

describe('pass-through authority', () => {
  it('control: a well-formed host:port is passed through to that port', async () => {
    const before = egress.counters.passthrough;
    expect(await h1Get(`127.0.0.1:${h1App.port}`)).toEqual({ status: 200, reason: undefined });
    expect(egress.counters.passthrough).toBe(before + 1);
  });

  it.each(['?', '#', '?x'])('HTTP/1.1 Host whose host part ends in %j: 400 ERR_REQUEST_INVALID, never sent on (regression: went to port 80)', async (c) => {
    const before = { passthrough: egress.counters.passthrough, seen: h1App.requests.length };
    expect(await h1Get(`127.0.0.1${c}:${h1App.port}`)).toEqual({ status: 400, reason: 'ERR_REQUEST_INVALID' });
    expect({ passthrough: egress.counters.passthrough, seen: h1App.requests.length }).toEqual(before);
  });

  it.each(['?', '#'])('h2c :authority whose host part ends in %j: 400 ERR_REQUEST_INVALID, never sent on', async (c) => {
    const before = { passthrough: egress.counters.passthrough, seen: h2App.requests.length };
    expect(await h2Get(`127.0.0.1${c}:${h2App.port}`)).toEqual({ status: 400, reason: 'ERR_REQUEST_INVALID' });
    expect({ passthrough: egress.counters.passthrough, seen: h2App.requests.length }).toEqual(before);
  });
});
