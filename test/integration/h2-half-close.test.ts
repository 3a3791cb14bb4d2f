import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppEvents, type RecordingApp, startH2App, startProxy, testConfig, type TestProxy } from '../unit/inbound/harness.ts';

/**
 * A client that half-closes its TCP connection after its last request still gets the answer
 * (docs/http2.md), probed meanwhile by frames it must ignore (the probe that finds clients that
 * are gone altogether: test/unit/h2/server.test.ts). The client is Python's h2 (Debian
 * python3-h2), which refuses anything RFC 9113 forbids.
 */

const run = promisify(execFile);
const SCRIPT = new URL('./python/half_close_client.py', import.meta.url).pathname;

describe('an HTTP/2 client that half-closes after its request (Python h2)', () => {
  let app: RecordingApp & AppEvents;
  let proxy: TestProxy;

  beforeAll(async () => {
    app = await startH2App();
    proxy = await startProxy(testConfig({ upstreamPort: app.port, protocol: 'h2c' }));
  });
  afterAll(async () => {
    await proxy.close();
    await app.close();
  });

  it('gets the whole answer, ignoring the probe frames; the call is not cancelled at the app', async () => {
    // /delay answers after 100 ms: the first probe goes out before it
    const { stdout } = await run('/usr/bin/python3', [SCRIPT, String(proxy.port), '/delay/half', 'good-alice'], { timeout: 15_000 });
    const r = JSON.parse(stdout) as { status: string; body: string; unknown: number[]; ended: boolean };
    expect({ ...r, unknown: undefined }).toEqual({ status: '200', body: 'ok /delay/half', unknown: undefined, ended: true });
    // one probe or more (one more each time the answer takes longer than 0.25, 1.25 … s), all of the experimental type
    expect(r.unknown.length).toBeGreaterThanOrEqual(1);
    expect(new Set(r.unknown)).toEqual(new Set([0xf0]));
    expect(app.events.filter((e) => e.startsWith('reset'))).toEqual([]);
  });
});
