import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyWatch } from '../../src/controlplane/client/watch.ts';
import { MAX_NACK_MESSAGE, policyDiscoveryClient, type PolicyRequestWire, type PolicyResponseWire } from '../../src/controlplane/proto.ts';
import type { PolicyStore, ServedPolicy } from '../../src/controlplane/server/store.ts';
import { createStreamRegistry } from '../../src/controlplane/server/streams.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { parsePolicyText } from '../../src/policy/load.ts';

/**
 * Property-based fuzzing of the control-plane protocol, both ends:
 * - the protobuf decoders (proto-loader) on arbitrary bytes: a value of the expected shape or a
 *   thrown error, never a half-typed object the handlers would trip on;
 * - the server's per-stream xDS state machine on arbitrary request sequences: never throws, one
 *   push outstanding at a time, bounded per-stream state;
 * - the sidecar's watch against a fake control plane sending arbitrary responses: each answered
 *   by exactly one ACK or NACK with its nonce, and the policy in force is always the last one
 *   that compiled for this service (a bad push never replaces a good policy).
 */

const LIMIT = { numRuns: 500, interruptAfterTimeLimit: 3000, markInterruptAsFailure: false } as const;

const definition = policyDiscoveryClient().service as unknown as {
  StreamPolicy: {
    requestSerialize(v: PolicyRequestWire): Buffer;
    requestDeserialize(b: Buffer): PolicyRequestWire;
    responseSerialize(v: PolicyResponseWire): Buffer;
    responseDeserialize(b: Buffer): PolicyResponseWire;
  };
};
const sp = definition.StreamPolicy;

/** Protobuf-ish bytes: valid tags for the message's fields mixed with junk. */
const wireBytes = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc
    .array(
      fc.oneof(
        fc.tuple(fc.constantFrom(0x0a, 0x12, 0x1a, 0x22, 0x2a, 0x32), fc.uint8Array({ maxLength: 20 })).map(([tag, b]) => [tag, b.length, ...b]),
        fc.tuple(fc.constantFrom(0x08, 0x10), fc.nat(300)).map(([tag, v]) => [tag, v & 0x7f]),
        fc.uint8Array({ maxLength: 4 }).map((b) => [...b]),
      ),
      { maxLength: 8 },
    )
    .map((parts) => Uint8Array.from(parts.flat())),
);

describe('protobuf decoders (both directions)', () => {
  it('PolicyRequest: arbitrary bytes decode to the full expected shape or throw', () => {
    fc.assert(
      fc.property(wireBytes, (bytes) => {
        let r: PolicyRequestWire;
        try {
          r = sp.requestDeserialize(Buffer.from(bytes));
        } catch {
          return;
        }
        expect(typeof r.service).toBe('string');
        expect(typeof r.instanceId).toBe('string');
        expect(typeof r.versionInfo).toBe('string');
        expect(typeof r.responseNonce).toBe('string');
        if (r.errorDetail !== null) {
          expect(typeof r.errorDetail.code).toBe('number');
          expect(typeof r.errorDetail.message).toBe('string');
        }
      }),
      LIMIT,
    );
  });

  it('PolicyResponse: arbitrary bytes decode to the full expected shape or throw', () => {
    fc.assert(
      fc.property(wireBytes, (bytes) => {
        let r: PolicyResponseWire;
        try {
          r = sp.responseDeserialize(Buffer.from(bytes));
        } catch {
          return;
        }
        expect(typeof r.versionInfo).toBe('string');
        expect(typeof r.nonce).toBe('string');
        expect(typeof r.service).toBe('string');
        if (r.policy !== null) {
          expect(typeof r.policy.fileName).toBe('string');
          expect(typeof r.policy.text).toBe('string');
        }
      }),
      LIMIT,
    );
  });

  it('encode → decode round-trips any request', () => {
    const req = fc.record({
      service: fc.string({ maxLength: 20 }),
      instanceId: fc.string({ maxLength: 20 }),
      versionInfo: fc.string({ maxLength: 20 }),
      responseNonce: fc.string({ maxLength: 8 }),
      errorDetail: fc.option(fc.record({ code: fc.integer({ min: -5, max: 20 }), message: fc.string({ maxLength: 40 }) }), { nil: null }),
    });
    fc.assert(
      fc.property(req, (r) => {
        expect(sp.requestDeserialize(sp.requestSerialize(r))).toEqual(r);
      }),
      LIMIT,
    );
  });
});

describe('server stream state machine', () => {
  const POLICY = (v: string): ServedPolicy => ({ service: 'orders', version: v, file: 'orders.yaml', text: `# ${v}` }) as unknown as ServedPolicy;

  it('any request sequence: no throw, one push outstanding, fresh nonces, bounded NACK text', () => {
    const request = fc.record({
      service: fc.constantFrom('', 'orders', 'payments'),
      instanceId: fc.constantFrom('', 'i-1'),
      versionInfo: fc.constantFrom('', 'v1', 'v2', 'v3', 'x'.repeat(300)),
      responseNonce: fc.constantFrom('', '1', '2', '3', '4', '99', 'nonce'),
      errorDetail: fc.option(fc.record({ code: fc.integer(), message: fc.string({ maxLength: 3000 }) }), { nil: null }),
    });
    fc.assert(
      fc.property(fc.array(fc.oneof(request, fc.constantFrom('publish-v2', 'publish-v3') as fc.Arbitrary<PolicyRequestWire | string>), { maxLength: 20 }), (steps) => {
        let current = POLICY('v1');
        const listeners = new Set<(changed: readonly string[]) => void>();
        const store = {
          get: (s: string) => (s === 'orders' ? current : undefined),
          subscribe: (l: (changed: readonly string[]) => void) => {
            listeners.add(l);
            return () => listeners.delete(l);
          },
        } as unknown as PolicyStore;
        const registry = createStreamRegistry({ store, controlPlaneId: 'cp', log: silentLogger, clock: () => 0 });
        const sent: PolicyResponseWire[] = [];
        const h = registry.open({ service: 'orders', instanceId: 'i-1', versionInfo: '', identity: { subject: 's', issuer: 'i' }, peer: 'p', send: (r) => sent.push(r) });
        for (const step of steps) {
          if (typeof step === 'string') {
            current = POLICY(step.slice('publish-'.length));
            for (const l of listeners) l(['orders']);
            continue;
          }
          const out = h.onRequest(step);
          expect(['ack', 'nack', 'stale', 'invalid']).toContain(out.kind);
          if (out.kind === 'nack') expect(out.message.length).toBeLessThanOrEqual(MAX_NACK_MESSAGE);
          const st = registry.status('orders')[0];
          expect(st).toBeDefined();
          expect((st?.lastNack?.message.length ?? 0) <= MAX_NACK_MESSAGE).toBe(true);
        }
        // nonces are never reused
        expect(new Set(sent.map((r) => r.nonce)).size).toBe(sent.length);
        h.close();
        registry.close();
        expect(registry.size()).toBe(0);
      }),
      LIMIT,
    );
  });
});

// ---- the sidecar's watch against a fake control plane

const VALID = (rule: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: https://idp.example
    audiences: [urn:ward:orders]
rules:
  - name: ${rule}
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`;

interface Push {
  readonly service: string;
  readonly text: string | null;
}

const push: fc.Arbitrary<Push> = fc.record({
  service: fc.constantFrom('orders', 'orders', 'payments', ''),
  text: fc.oneof(
    fc.constantFrom('a', 'b', 'c').map(VALID),
    fc.constant(VALID('x').replace('service: orders', 'service: payments')),
    fc.constantFrom(null, '', 'rules: [', 'apiVersion: ward.dev/v1\nkind: Policy\n', '\u0000\uFFFF'),
    fc.string({ maxLength: 60 }),
    fc.constantFrom('a', 'b').map(VALID).chain((t) => fc.nat(t.length).map((n) => t.slice(0, n))),
  ),
});

let server: grpc.Server;
let address: string;
let script: Push[] = [];
let answers: PolicyRequestWire[] = [];
let streamDone: (() => void) | null = null;

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(policyDiscoveryClient().service, {
    StreamPolicy: (call: grpc.ServerDuplexStream<PolicyRequestWire, PolicyResponseWire>) => {
      call.sendMetadata(new grpc.Metadata());
      let i = 0;
      const next = (): void => {
        const p = script[i];
        if (p === undefined) {
          streamDone?.();
          return;
        }
        i++;
        call.write({
          versionInfo: `v${i}`,
          nonce: `n${i}`,
          service: p.service,
          policy: p.text === null ? null : { fileName: 'orders.yaml', text: p.text },
          controlPlaneId: 'fuzz',
        });
      };
      call.on('data', (r: PolicyRequestWire) => {
        if (r.responseNonce !== '') answers.push(r);
        next();
      });
      call.on('error', () => {});
    },
    GetStatus: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});
afterAll(() => {
  server.forceShutdown();
});

describe('sidecar watch against arbitrary pushes', () => {
  it('each push gets exactly one ACK or NACK; the policy in force is the last push that compiled for this service', async () => {
    const compile = (text: string, file: string): ReturnType<typeof parsePolicyText> => parsePolicyText(text, file, { service: 'orders' });
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(push, { minLength: 1, maxLength: 5 }), async (pushes) => {
        runs++;
        script = pushes;
        answers = [];
        const done = new Promise<void>((r) => {
          streamDone = r;
        });
        const stateDir = mkdtempSync(join(tmpdir(), 'ward-fuzz-cp-'));
        const watch = createPolicyWatch({
          address,
          service: 'orders',
          instanceId: 'fuzz',
          token: () => Promise.resolve('token'),
          stateDir,
          compile,
          onPolicy: () => {},
          log: silentLogger,
        });
        try {
          await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
          expect(answers.map((a) => a.responseNonce)).toEqual(pushes.map((_, i) => `n${i + 1}`));
          let expected: string | null = null;
          pushes.forEach((p, i) => {
            let ok = false;
            if (p.service === 'orders' && p.text !== null) {
              try {
                expected = compile(p.text, 'orders.yaml').version;
                ok = true;
              } catch {
                ok = false;
              }
            }
            const a = answers[i] as PolicyRequestWire;
            expect(a.errorDetail === null).toBe(ok);
            if (a.errorDetail !== null) expect(a.errorDetail.message.length).toBeLessThanOrEqual(MAX_NACK_MESSAGE);
          });
          expect(watch.current()?.version ?? null).toBe(expected);
        } finally {
          await watch.close();
          rmSync(stateDir, { recursive: true, force: true });
        }
      }),
      { numRuns: 25, interruptAfterTimeLimit: 8000, markInterruptAsFailure: false },
    );
    expect(runs).toBeGreaterThanOrEqual(10);
  });
});
