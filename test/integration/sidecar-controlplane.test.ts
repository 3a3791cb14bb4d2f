import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/authn/authenticator.ts';
import { parseControlPlaneConfig } from '../../src/controlplane/server/config.ts';
import { type RunningControlPlane, startControlPlane } from '../../src/controlplane/server/control-plane.ts';
import { validatePolicyForControlPlane } from '../../src/controlplane/server/validate.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { controlPlaneAuthenticator, controlPlaneYaml } from '../unit/controlplane/idp-setup.ts';
import { makeCaSignedCert, makeSelfSignedCert, type TlsFiles } from '../unit/inbound/harness.ts';
import { type Mesh, startMesh, waitFor } from './harness.ts';

/** A sidecar without any policy: not ready, and a call gets UNAVAILABLE without reaching the app. */
async function expectFailsClosed(mesh: Mesh, idp: TestIdp): Promise<void> {
  expect(mesh.sidecar.ready()).toBe(false);
  const r = await mesh.client().unary('GetOrder', { id: '1' }, await idp.token('reporting', 'urn:ward:orders', 'orders.read'));
  expect(r.code).toBe(status.UNAVAILABLE);
  expect(r.trailers['x-ward-reason']).toBe('ERR_POLICY_UNAVAILABLE');
  expect(mesh.app.calls).toHaveLength(0);
}

/**
 * `ward sidecar` with `policy.controlPlane`: the real control plane (in-process, real gRPC,
 * sidecar authenticated with a dev-IdP client-credentials token), the real sidecar, grpc-js.
 */
describe('sidecar fed by the control plane', () => {
  let idp: TestIdp;
  let dir: string;
  let policies: string;
  let cpPort: number;
  let cp: RunningControlPlane | undefined;
  let cpAuthn: Authenticator;

  async function startCp(port = 0): Promise<RunningControlPlane> {
    const cfg = parseControlPlaneConfig(controlPlaneYaml(idp.issuer, policies, port), join(dir, 'cp.yaml'));
    return startControlPlane(cfg, { log: silentLogger, parse: validatePolicyForControlPlane, authenticator: cpAuthn });
  }

  function publish(text: string): void {
    writeFileSync(join(policies, '.orders.tmp'), text);
    renameSync(join(policies, '.orders.tmp'), join(policies, 'orders.yaml'));
  }

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'ward-cp-sidecar-'));
    policies = join(dir, 'policies');
    mkdirSync(policies);
    publish(ordersPolicyText(idp.issuer));
    const cfg = parseControlPlaneConfig(controlPlaneYaml(idp.issuer, policies), join(dir, 'cp.yaml'));
    cpAuthn = controlPlaneAuthenticator(cfg);
    cp = await startCp();
    cpPort = cp.port;
  });
  afterAll(async () => {
    await cp?.close();
    cpAuthn.close();
    await idp.close();
  });

  it('enforces the published version, follows edits on open connections, refuses bad ones, and survives the control plane going away', async () => {
    const stateDir = join(dir, 'state');
    const mesh = await startMesh({ idp, controlPlane: { address: `127.0.0.1:${cpPort}`, stateDir } });
    try {
      const client = mesh.client();
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect((await client.unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);
      expect((await client.unary('GetOrder', { id: '1' })).code).toBe(status.UNAUTHENTICATED);

      // a valid edit reaches the open connection
      const frozen = ordersPolicyText(idp.issuer).replace(
        '- name: no-deletes',
        '- name: freeze-reads\n    action: deny\n    match:\n      grpc: [/ward.demo.v1.Orders/GetOrder]\n  - name: no-deletes',
      );
      publish(frozen);
      await waitFor(async () => (await client.unary('GetOrder', { id: '1' }, token)).trailers['x-ward-reason'] === 'ERR_POLICY_DENIED', 5000, 'the edit to be enforced');

      // an invalid edit is never served: the last valid version stays in force
      publish(`${ordersPolicyText(idp.issuer)}\n  - name: broken\n    action: maybe\n`);
      await waitFor(() => (cp?.store.problems().length ?? 0) > 0, 5000, 'the control plane to record the bad file');
      expect((await client.unary('GetOrder', { id: '1' }, token)).trailers['x-ward-reason']).toBe('ERR_POLICY_DENIED');

      // the control plane goes away: enforcement continues with the last accepted version
      await cp?.close();
      cp = undefined;
      expect((await client.unary('GetOrder', { id: '1' }, token)).trailers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
    } finally {
      await mesh.close();
    }

    // a sidecar restarted while the control plane is down enforces the persisted version
    const again = await startMesh({ idp, controlPlane: { address: `127.0.0.1:${cpPort}`, stateDir } });
    try {
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      const r = await again.client().unary('GetOrder', { id: '1' }, token);
      expect(r.code).toBe(status.PERMISSION_DENIED);
      expect(r.trailers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
      expect(again.app.calls).toHaveLength(0);

      // the control plane comes back (with the original policy): the sidecar reconnects and follows
      publish(ordersPolicyText(idp.issuer));
      cp = await startCp(cpPort);
      const client = again.client();
      await waitFor(async () => (await client.unary('GetOrder', { id: '1' }, token)).code === status.OK, 45_000, 'reconnect and the new version');
    } finally {
      await again.close();
    }
  });

  it('fails closed (not ready, UNAVAILABLE) with no policy at all', async () => {
    const mesh = await startMesh({ idp, controlPlane: { address: '127.0.0.1:1', stateDir: join(dir, 'empty-state') }, waitReady: false });
    try {
      await expectFailsClosed(mesh, idp);
    } finally {
      await mesh.close();
    }
  });
});

describe('sidecar fed by a control plane over TLS (policy.controlPlane.tls)', () => {
  let idp: TestIdp;
  let dir: string;
  let cp: RunningControlPlane;
  let cpAuthn: Authenticator;
  let cert: TlsFiles;
  let otherCa: TlsFiles;

  beforeAll(async () => {
    idp = await startTestIdp();
    cert = makeSelfSignedCert();
    otherCa = makeSelfSignedCert();
    dir = mkdtempSync(join(tmpdir(), 'ward-cp-tls-'));
    const policies = join(dir, 'policies');
    mkdirSync(policies);
    writeFileSync(join(policies, 'orders.yaml'), ordersPolicyText(idp.issuer));
    const yaml = `${controlPlaneYaml(idp.issuer, policies)}tls: { certFile: ${cert.certFile}, keyFile: ${cert.keyFile} }\n`;
    const cfg = parseControlPlaneConfig(yaml, join(dir, 'cp.yaml'));
    cpAuthn = controlPlaneAuthenticator(cfg);
    cp = await startControlPlane(cfg, { log: silentLogger, parse: validatePolicyForControlPlane, authenticator: cpAuthn });
  });
  afterAll(async () => {
    await cp.close();
    cpAuthn.close();
    await idp.close();
    cert.cleanup();
    otherCa.cleanup();
  });

  it("verifies the control plane's certificate with caFile, then enforces its policy", async () => {
    const mesh = await startMesh({ idp, controlPlane: { address: `127.0.0.1:${cp.port}`, stateDir: join(dir, 'state-ok'), tls: { caFile: cert.certFile } } });
    try {
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect((await mesh.client().unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);
      expect(mesh.app.calls).toHaveLength(1);
    } finally {
      await mesh.close();
    }
  });

  it('refuses a control plane whose certificate another CA signed: no policy, fails closed', async () => {
    const mesh = await startMesh({
      idp,
      controlPlane: { address: `127.0.0.1:${cp.port}`, stateDir: join(dir, 'state-bad'), tls: { caFile: otherCa.certFile } },
      waitReady: false,
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await expectFailsClosed(mesh, idp);
    } finally {
      await mesh.close();
    }
  });
});

/**
 * A new CA for the control plane without restarting sidecars (control-plane-cert.sh --new-ca):
 * the sidecar's CA file first gains the new CA next to the old one (the ConfigMap update), the
 * control plane then serves a certificate the new CA signed, and the sidecar, which reads its
 * CA file again at each connection, verifies it when it reconnects.
 */
describe('a rotated control-plane CA reaches a running sidecar', () => {
  let idp: TestIdp;
  let dir: string;
  let cpAuthn: Authenticator;
  let cp: RunningControlPlane | undefined;

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'ward-cp-ca-'));
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'policies', 'orders.yaml'), ordersPolicyText(idp.issuer));
  });
  afterAll(async () => {
    await cp?.close();
    cpAuthn?.close();
    await idp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reconnects to a control plane whose certificate only the new CA verifies', async () => {
    const oldCa = makeCaSignedCert(dir, 'old', 'IP:127.0.0.1');
    const newCa = makeCaSignedCert(dir, 'new', 'IP:127.0.0.1');
    const caFile = join(dir, 'ca.crt');
    copyFileSync(oldCa.ca, caFile);
    const start = async (pair: { cert: string; key: string }, port: number): Promise<RunningControlPlane> => {
      const cfg = parseControlPlaneConfig(`${controlPlaneYaml(idp.issuer, join(dir, 'policies'), port)}tls: { certFile: ${pair.cert}, keyFile: ${pair.key} }\n`, join(dir, 'cp.yaml'));
      cpAuthn ??= controlPlaneAuthenticator(cfg);
      return startControlPlane(cfg, { log: silentLogger, parse: validatePolicyForControlPlane, authenticator: cpAuthn });
    };
    cp = await start(oldCa, 0);
    const port = cp.port;
    const mesh = await startMesh({ idp, controlPlane: { address: `127.0.0.1:${port}`, stateDir: join(dir, 'state'), tls: { caFile } } });
    try {
      await waitFor(() => cp!.streams() === 1, 10_000, 'the sidecar connected');
      // the ConfigMap update: the new CA next to the old one
      writeFileSync(caFile, readFileSync(newCa.ca, 'utf8') + readFileSync(oldCa.ca, 'utf8'));
      // the control plane comes back with a certificate only the new CA verifies
      await cp.close();
      cp = await start(newCa, port);
      await waitFor(() => cp!.streams() === 1, 15_000, 'the sidecar reconnected over TLS with the new CA');
      const token = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
      expect((await mesh.client().unary('GetOrder', { id: '1' }, token)).code).toBe(status.OK);
    } finally {
      await mesh.close();
    }
  }, 40_000);
});
