import { afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Authenticate, AuthResult } from '../../../src/controlplane/server/access.ts';
import { compileBindings } from '../../../src/controlplane/server/access.ts';
import type { ControlPlaneConfig } from '../../../src/controlplane/server/config.ts';
import { startControlPlaneServer, type ControlPlaneServer } from '../../../src/controlplane/server/server.ts';
import { createPolicyStore, type PolicyStore } from '../../../src/controlplane/server/store.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import {
  healthClient,
  policyDiscoveryClient,
  type PolicyRequestWire,
  type PolicyResponseWire,
  type StatusResponseWire,
} from '../../../src/controlplane/proto.ts';
import { WardError } from '../../../src/errors/ward-error.ts';
import type { Logger } from '../../../src/lib/log.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import type { Identity } from '../../../src/policy/model.ts';
import type { PolicyWatchOptions } from '../../../src/controlplane/client/watch.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { tempDir } from './fixtures.ts';

/**
 * A real control-plane server on 127.0.0.1:0 over a temp policy directory, with a table-driven
 * authenticator (token string → identity) standing in for authn/ (the integration tests use the
 * real one with dev-IdP tokens). Raw gRPC streams let tests speak the protocol message by message.
 */

export function identity(subject: string, extra: Partial<Identity> = {}): Identity {
  return {
    issuer: 'http://127.0.0.1:4400',
    subject,
    claims: { sub: subject },
    tokenKind: 'jwt',
    expiresAt: Math.floor(Date.now() / 1000) + 3600,
    actors: [],
    scopes: new Set(),
    ...extra,
  };
}

export function tableAuthenticator(tokens: Record<string, Identity>): Authenticate {
  return {
    authenticate(token): AuthResult {
      const id = tokens[token];
      return id === undefined ? { ok: false, error: new WardError('ERR_TOKEN_SIGNATURE', 'unknown test token') } : { ok: true, identity: id };
    },
  };
}

export const TOKENS = {
  orders: 'orders-token',
  payments: 'payments-token',
  operator: 'operator-token',
  expired: 'expiring-token',
};

/**
 * A policy watch's options as the unit tests use them: service orders, pod-1, the orders token,
 * the sidecar's own compile (service orders, no environment), nothing done with a policy, fast
 * back-off. `over` replaces any of them.
 */
export function watchOptions(address: string, stateDir: string, over: Partial<PolicyWatchOptions> = {}): PolicyWatchOptions {
  return {
    address,
    service: 'orders',
    instanceId: 'pod-1',
    token: async () => TOKENS.orders,
    stateDir,
    compile: (t, file) => parsePolicyText(t, file, { service: 'orders', env: {} }),
    onPolicy: () => {},
    log: silentLogger,
    backoff: { initialMs: 20, maxMs: 200 },
    ...over,
  };
}

export interface Harness {
  readonly dir: string;
  readonly store: PolicyStore;
  readonly server: ControlPlaneServer;
  readonly address: string;
  write(file: string, text: string): Promise<void>;
  /** A raw stream with `authorization: Bearer <token>` (none for null; given metadata as is). */
  stream(token?: string | null | grpc.Metadata): RawStream;
  status(md?: grpc.Metadata): Promise<StatusResponseWire>;
  health(): grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  close(): Promise<void>;
}

export async function startHarness(
  opts: {
    files?: Record<string, string>;
    status?: { allowLoopbackWithoutToken: boolean; subjects: readonly string[] };
    maxStreams?: number;
    bindings?: ControlPlaneConfig['bindings'];
    log?: Logger;
    port?: number;
    dir?: string;
    maxFileBytes?: number;
  } = {},
): Promise<Harness> {
  const t = opts.dir === undefined ? tempDir() : { dir: opts.dir, cleanup: () => {} };
  for (const [name, text] of Object.entries(opts.files ?? {})) writeFileSync(join(t.dir, name), text);
  const store = await createPolicyStore({ dir: t.dir, parse: validatePolicyForControlPlane, log: silentLogger, watch: false, ...(opts.maxFileBytes === undefined ? {} : { maxFileBytes: opts.maxFileBytes }) });
  const server = await startControlPlaneServer({
    id: 'cp-test',
    host: '127.0.0.1',
    port: opts.port ?? 0,
    store,
    policyDir: t.dir,
    authenticator: tableAuthenticator({
      [TOKENS.orders]: identity('orders-sidecar'),
      [TOKENS.payments]: identity('payments-sidecar'),
      [TOKENS.operator]: identity('ward-operator'),
      [TOKENS.expired]: identity('orders-sidecar', { expiresAt: Math.floor(Date.now() / 1000) - 1 }),
    }),
    bindings: compileBindings(
      opts.bindings ?? [
        { subject: 'orders-sidecar', services: ['orders'] },
        { subject: 'payments-sidecar', services: ['payments'] },
      ],
    ),
    status: opts.status ?? { allowLoopbackWithoutToken: true, subjects: ['ward-operator'] },
    maxStreams: opts.maxStreams ?? 1000,
    log: opts.log ?? silentLogger,
  });
  const address = `127.0.0.1:${server.port}`;
  const Client = policyDiscoveryClient();
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    StreamPolicy(md: grpc.Metadata): grpc.ClientDuplexStream<PolicyRequestWire, PolicyResponseWire>;
    GetStatus(req: { service: string }, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, r?: StatusResponseWire) => void): void;
  };
  const HealthClient = healthClient();
  const health = new HealthClient(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  const streams: RawStream[] = [];
  return {
    dir: t.dir,
    store,
    server,
    address,
    async write(file, text) {
      writeFileSync(join(t.dir, file), text);
      await store.rescan();
    },
    stream(token = TOKENS.orders) {
      let md = new grpc.Metadata();
      if (token instanceof grpc.Metadata) md = token;
      else if (token !== null) md.set('authorization', `Bearer ${token}`);
      const s = rawStream(client.StreamPolicy(md));
      streams.push(s);
      return s;
    },
    status(md = new grpc.Metadata()) {
      return new Promise((resolve, reject) => client.GetStatus({ service: '' }, md, (err, r) => (err ? reject(err) : resolve(r as StatusResponseWire))));
    },
    health: () => health,
    async close() {
      for (const s of streams) s.call.cancel();
      await server.close();
      store.close();
      client.close();
      health.close();
      t.cleanup();
    },
  };
}

export interface RawStream {
  readonly call: grpc.ClientDuplexStream<PolicyRequestWire, PolicyResponseWire>;
  /** Resolves when the server sent response headers (the stream is authorized). */
  readonly headers: Promise<void>;
  readonly status: Promise<grpc.StatusObject>;
  /** The next response not yet taken. */
  next(): Promise<PolicyResponseWire>;
  send(req: Partial<PolicyRequestWire>): void;
  /** First request of a stream. */
  hello(service: string, instanceId: string, versionInfo?: string): void;
  ack(r: PolicyResponseWire): void;
  nack(r: PolicyResponseWire, keeps: string, message: string): void;
}

function rawStream(call: grpc.ClientDuplexStream<PolicyRequestWire, PolicyResponseWire>): RawStream {
  const queue: PolicyResponseWire[] = [];
  const waiting: ((r: PolicyResponseWire) => void)[] = [];
  call.on('data', (r: PolicyResponseWire) => {
    const w = waiting.shift();
    if (w !== undefined) w(r);
    else queue.push(r);
  });
  call.on('error', () => {});
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  const headers = new Promise<void>((resolve) => call.on('metadata', () => resolve()));
  const send = (req: Partial<PolicyRequestWire>): void => {
    call.write({ service: '', instanceId: '', versionInfo: '', responseNonce: '', errorDetail: null, ...req });
  };
  return {
    call,
    headers,
    status,
    next: () => {
      const r = queue.shift();
      if (r !== undefined) return Promise.resolve(r);
      return new Promise((resolve, reject) => {
        waiting.push(resolve);
        void status.then((st) => reject(new Error(`stream ended (${st.code} ${st.details}) while waiting for a response`)));
      });
    },
    send,
    hello: (service, instanceId, versionInfo = '') => send({ service, instanceId, versionInfo }),
    ack: (r) => send({ versionInfo: r.versionInfo, responseNonce: r.nonce }),
    nack: (r, keeps, message) => send({ versionInfo: keeps, responseNonce: r.nonce, errorDetail: { code: 3, message } }),
  };
}

/**
 * A test file's clean-ups, run after each of its tests (last added first), and a harness closed
 * with them. Called once, at the top level of a test file.
 */
export function perTest(): {
  readonly cleanups: (() => Promise<void> | void)[];
  readonly harness: (opts?: Parameters<typeof startHarness>[0]) => Promise<Harness>;
} {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    cleanups,
    harness: async (opts = {}) => {
      const h = await startHarness(opts);
      cleanups.push(() => h.close());
      return h;
    },
  };
}

