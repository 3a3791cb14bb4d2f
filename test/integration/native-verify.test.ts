import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OrdersApp, startOrdersApp } from '../../src/demo/orders-app.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { spawnSidecar, type SpawnedSidecar } from '../support/sidecar-process.ts';
import { h2Fields, waitFor } from './harness.ts';

/**
 * `ward sidecar` as a process, with the RS256 check of the addon npm ci built
 * (native/jws-verify.c) and with `WARD_NATIVE_VERIFY=off` (crypto.verify): the same calls
 * allowed and refused either way, and `/status` saying which path ran.
 */

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

/** One GetOrder call: its grpc-status and x-ward-reason. */
async function getOrder(port: number, token: string): Promise<{ status: string | undefined; reason: string | undefined }> {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  try {
    // field 1, the order id "1"
    const body = Buffer.from([0, 0, 0, 0, 3, 0x0a, 1, 0x31]);
    const fields = await h2Fields(s, { ':method': 'POST', ':path': '/ward.demo.v1.Orders/GetOrder', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` }, body);
    return { status: fields['grpc-status'], reason: fields['x-ward-reason'] };
  } finally {
    s.close();
  }
}

describe('RS256 checks in a ward sidecar process, with and without the addon', () => {
  let idp: TestIdp;
  let app: OrdersApp;
  let config: string;
  const wards: SpawnedSidecar[] = [];

  beforeAll(async () => {
    idp = await startTestIdp();
    app = await startOrdersApp();
    const dir = mkdtempSync(join(tmpdir(), 'ward-native-verify-'));
    writeFileSync(join(dir, 'policy.yaml'), ordersPolicyText(idp.issuer));
    writeFileSync(join(dir, 'client-secret'), 'orders-sidecar-secret\n');
    config = join(dir, 'sidecar.yaml');
    writeFileSync(
      config,
      `service: orders\ninbound: { listen: { host: 127.0.0.1, port: 0 } }\nupstream: { url: "http://127.0.0.1:${app.port}" }\nadmin: { host: 127.0.0.1, port: 0 }\npolicy: { file: policy.yaml }\nauthn:\n  credentials:\n    - { issuer: "${idp.issuer}", clientId: orders-sidecar, clientSecretFile: client-secret }\ntelemetry: { enabled: false }\ndrainTimeoutMs: 100\n`,
    );
  }, 60_000);

  afterAll(async () => {
    for (const w of wards) await w.stop();
    await app?.close();
    await idp?.close();
  });

  for (const [label, env, rsa] of [
    ['the addon (default)', {}, 'native'],
    ['WARD_NATIVE_VERIFY=off', { WARD_NATIVE_VERIFY: 'off' }, 'off'],
  ] as const) {
    it(`${label}: a valid token is let through, a forged signature refused`, async () => {
      const ward = await spawnSidecar(config, env);
      wards.push(ward);
      // Loaded at start, before any token (before the first file-page release: bin/ward.js),
      // or not at all when off. Regression: loaded at the first token, the linker's look-ups
      // in node's symbol table stayed resident and raised the peak RSS by ~4 MB.
      const maps = readFileSync(`/proc/${ward.proc.pid}/maps`, 'utf8');
      expect(maps.includes('jws-verify.node')).toBe(rsa === 'native');
      const status = (await (await fetch(`http://127.0.0.1:${ward.admin}/status`)).json()) as { signatures: { rsa: string } };
      expect(status.signatures.rsa).toBe(rsa);
      await waitFor(async () => (await fetch(`http://127.0.0.1:${ward.admin}/readyz`)).status === 200, 15_000, 'readiness');
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect(await getOrder(ward.inbound, token)).toEqual({ status: '0', reason: undefined });
      const dot = token.lastIndexOf('.');
      const sig = Buffer.from(token.slice(dot + 1), 'base64url');
      sig.writeUInt8(sig.readUInt8(10) ^ 1, 10);
      expect(await getOrder(ward.inbound, `${token.slice(0, dot)}.${sig.toString('base64url')}`)).toMatchObject({ status: '16', reason: 'ERR_TOKEN_SIGNATURE' });
    });
  }

  it('refuses any other WARD_NATIVE_VERIFY: status 2 and the value named', () => {
    const r = spawnSync(process.execPath, [WARD, 'policy', 'check', '--help'], { env: { ...process.env, WARD_NATIVE_VERIFY: 'yes' }, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("ward: WARD_NATIVE_VERIFY: 'yes' is neither on nor off");
  });
});
