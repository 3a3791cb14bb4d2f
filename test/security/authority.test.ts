import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import { h2Once, startTwoWards, type TwoWards, type Ward } from './support/ward.ts';

/**
 * Host and `:authority` hold an authority and nothing else (RFC 9112 §3.2: a Host with an
 * invalid value gets a 400; RFC 9113 §8.3.1: no userinfo). The sidecar forwards it as the
 * app's Host, and apps on Fetch-API adapters (SvelteKit's adapter-node, React Router's node
 * adapter, Koa's `ctx.URL`) build their URL as `scheme://` + Host + path: `Host:
 * orders/api/internal/secret?` with `GET /public/x` would route to `/api/internal/secret`, a
 * path the policy never judged (found in review; regression).
 */


let rig: TwoWards;
let h2app: RecordingApp;
let h1app: RecordingApp;
let wardH2: Ward;
let wardH1: Ward;

beforeAll(async () => {
  rig = await startTwoWards();
  ({ h2app, h1app, wardH2, wardH1 } = rig);
});
afterAll(() => rig.close());
beforeEach(() => rig.reset());

// /public/** is open to anyone; /api/internal/** to no one (support/ward.ts's policy).
const BAD = ['orders/api/internal/secret?', 'orders?x', 'orders#x', 'user@orders', 'orders:80/x', 'ord ers', 'orders:123456', 'orders:8a', '[::1', '%zz'];
const GOOD = ['orders', 'orders:8080', 'orders.ns.svc.cluster.local:80', '127.0.0.1:9', '[::1]:8080', 'xn--bcher-kva.example', 'a_b-c~d'];

describe('Host / :authority that is not host[:port] is refused, never forwarded', () => {
  it('HTTP/1.1 caller: 400, the app sees nothing, the connection closes', async () => {
    for (const host of BAD) {
      const x = await h1raw(wardH1.port, `GET /public/x HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      expect({ host, status: x.replies[0]?.status, reason: x.replies[0]?.headers['x-ward-reason'] }).toEqual({ host, status: 400, reason: 'ERR_REQUEST_INVALID' });
      expect(x.closedByServer).toBe(true);
    }
    expect(h1app.seen).toEqual([]);
  });

  it('HTTP/1.1 caller: an empty Host is refused too (an http URI has a host, RFC 9110 §4.2.1)', async () => {
    const x = await h1raw(wardH1.port, 'GET /public/x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n');
    expect(x.replies[0]?.status).toBe(400);
    expect(h1app.seen).toEqual([]);
  });

  it.each([
    ['HTTP/1.1 app', () => wardH1, () => h1app],
    ['h2c app', () => wardH2, () => h2app],
  ] as const)('HTTP/2 caller, %s: 400 for a bad :authority, the same call with a good one passes', async (_n, ward, app) => {
    for (const authority of BAD) {
      const r = await h2Once(ward().port, { ':path': '/public/x', ':authority': authority });
      expect({ authority, status: r.status }).toEqual({ authority, status: 400 });
    }
    expect(app().seen).toEqual([]);
    for (const authority of GOOD) {
      const r = await h2Once(ward().port, { ':path': '/public/x', ':authority': authority });
      expect({ authority, status: r.status }).toEqual({ authority, status: 200 });
    }
    expect(app().seen.map((s) => s.headers.host ?? s.headers[':authority'])).toEqual(GOOD);
  });
});
