import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { policyDiscoveryClient, type PolicyRequestWire, type PolicyResponseWire } from '../../../src/controlplane/proto.ts';
import { compileBindings, type Authenticate } from '../../../src/controlplane/server/access.ts';
import { startControlPlaneServer, type ControlPlaneServer } from '../../../src/controlplane/server/server.ts';
import { createPolicyStore, type PolicyStore } from '../../../src/controlplane/server/store.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { WardError } from '../../../src/errors/ward-error.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { policy, tempDir } from './fixtures.ts';
import { identity } from './harness.ts';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * docs/control-plane.md "Authentication and bindings": a forged token gets UNAUTHENTICATED, a
 * valid one for an unbound service PERMISSION_DENIED. A client that sends its request and
 * half-closes (as grpcurl or any unary-style client does) while its token is still being checked
 * (a cold JWKS cache: the real authenticator is async) got OK instead: the half-close ended the
 * call before the verdict (found in review; regression).
 */
describe('StreamPolicy: a client that half-closes while its token is being checked', () => {
  let server: ControlPlaneServer | undefined;
  let store: PolicyStore | undefined;
  let cleanup: (() => void) | undefined;
  afterEach(async () => {
    await server?.close();
    store?.close();
    cleanup?.();
  });

  async function start(): Promise<string> {
    const t = tempDir();
    cleanup = t.cleanup;
    writeFileSync(join(t.dir, 'orders.yaml'), policy('orders'));
    writeFileSync(join(t.dir, 'payments.yaml'), policy('payments'));
    store = await createPolicyStore({ dir: t.dir, parse: validatePolicyForControlPlane, log: silentLogger, watch: false });
    // As authn/ does on a cold JWKS cache: the verdict comes after a network round trip.
    const authenticator: Authenticate = {
      authenticate: (token) =>
        new Promise((r) =>
          setTimeout(
            () => r(token === 'orders-token' ? { ok: true, identity: identity('orders-sidecar') } : { ok: false, error: new WardError('ERR_TOKEN_SIGNATURE', 'forged') }),
            100,
          ),
        ),
    };
    server = await startControlPlaneServer({
      id: 'cp', host: '127.0.0.1', port: 0, store, policyDir: t.dir, authenticator,
      bindings: compileBindings([{ subject: 'orders-sidecar', services: ['orders'] }]),
      status: { allowLoopbackWithoutToken: true, subjects: [] }, maxStreams: 100, log: silentLogger,
    });
    return `127.0.0.1:${server.port}`;
  }

  async function statusOf(address: string, token: string, service: string): Promise<grpc.StatusObject & { responses: number }> {
    const Client = policyDiscoveryClient();
    const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      StreamPolicy(md: grpc.Metadata): grpc.ClientDuplexStream<PolicyRequestWire, PolicyResponseWire>;
    };
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const call = client.StreamPolicy(md);
    let responses = 0;
    call.on('data', () => responses++);
    call.on('error', () => {});
    const st = new Promise<grpc.StatusObject>((r) => call.on('status', r));
    call.write({ service, instanceId: 'pod-1', versionInfo: '', responseNonce: '', errorDetail: null });
    call.end();
    const out = await st;
    client.close();
    return { ...out, responses };
  }

  it('a forged token gets UNAUTHENTICATED, not OK', async () => {
    const address = await start();
    const st = await statusOf(address, 'forged', 'orders');
    expect(st.code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('a valid token asking for an unbound service gets PERMISSION_DENIED, not OK', async () => {
    const address = await start();
    const st = await statusOf(address, 'orders-token', 'payments');
    expect(st.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('a valid token for its own service is admitted, gets its policy, then OK', async () => {
    const address = await start();
    const st = await statusOf(address, 'orders-token', 'orders');
    expect({ code: st.code, responses: st.responses }).toEqual({ code: grpc.status.OK, responses: 1 });
  });
});
