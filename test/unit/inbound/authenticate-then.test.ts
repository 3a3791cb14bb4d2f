import { afterEach, describe, expect, it } from 'vitest';
import { WardError } from '../../../src/errors/ward-error.ts';
import type { AuthResult, InboundDeps } from '../../../src/inbound/types.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { h2Connect, h2Request, identity, startH2App, startProxy, TEST_POLICY, testConfig } from './harness.ts';

/**
 * The request path with `authenticateThen` (what a sidecar wires: the signature batch answers
 * a waiting call through a callback, no promise): a call is forwarded only once its answer
 * came and allowed it; an answer for a call whose client left forwards nothing; a stage that
 * throws on the answer fails the call closed, recorded.
 */

type Then = NonNullable<InboundDeps['authenticateThen']>;

/** Answers `Bearer wait-*` tokens only when the test says so, others at once. */
function gated(answers: Map<string, AuthResult>): { then: Then; waiting: () => number; release: () => void } {
  const queue: (() => void)[] = [];
  const then: Then = (token, ctx, done) => {
    const r = answers.get(token) ?? { ok: false, error: new WardError('ERR_TOKEN_SIGNATURE', 'unknown test token') };
    if (!token.startsWith('wait-')) return r;
    queue.push(() => done(ctx, r));
    return undefined;
  };
  return { then, waiting: () => queue.length, release: () => queue.splice(0).forEach((f) => f()) };
}

const GET = (token: string): Record<string, string> => ({ ':method': 'GET', ':path': '/hello', ':authority': 'orders', authorization: `Bearer ${token}` });

describe('inbound with authenticateThen', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function rig(answers: Map<string, AuthResult>, policy?: () => CompiledPolicy | null) {
    const app = await startH2App();
    cleanup.push(() => app.close());
    const g = gated(answers);
    // `authenticate` must not be used when `authenticateThen` is given
    const proxy = await startProxy(testConfig({ upstreamPort: app.port }), {
      authenticateThen: g.then,
      authenticate: () => {
        throw new Error('authenticate called');
      },
      ...(policy === undefined ? {} : { policy }),
    });
    cleanup.push(() => proxy.close());
    const session = await h2Connect(proxy.port);
    cleanup.push(async () => void session.close());
    return { app, g, proxy, session };
  }

  it('forwards a call once its answer allows it, refuses one whose answer does not, and answers at once when it can', async () => {
    const { app, g, proxy, session } = await rig(
      new Map<string, AuthResult>([
        ['wait-alice', { ok: true, identity: identity('alice') }],
        ['wait-forged', { ok: false, error: new WardError('ERR_TOKEN_SIGNATURE', 'test') }],
        ['now-bob', { ok: true, identity: identity('bob') }],
      ]),
    );
    expect((await h2Request(session, GET('now-bob'))).headers[':status']).toBe(200);
    const alice = h2Request(session, GET('wait-alice'));
    const forged = h2Request(session, GET('wait-forged'));
    while (g.waiting() < 2) await new Promise((r) => setTimeout(r, 5));
    expect(app.requests).toHaveLength(1); // bob only: nothing waiting reached the app
    g.release();
    expect((await alice).headers[':status']).toBe(200);
    expect((await forged).headers[':status']).toBe(401);
    expect(app.requests).toHaveLength(2);
    expect(proxy.decisions.map((d) => d.code ?? 'allow').sort()).toEqual(['ERR_TOKEN_SIGNATURE', 'allow', 'allow'].sort());
  });

  it('an answer for a call whose client left forwards nothing', async () => {
    const { app, g, session } = await rig(new Map<string, AuthResult>([['wait-alice', { ok: true, identity: identity('alice') }]]));
    const s = session.request(GET('wait-alice'));
    s.on('error', () => {});
    while (g.waiting() < 1) await new Promise((r) => setTimeout(r, 5));
    s.close();
    await new Promise((r) => setTimeout(r, 50));
    g.release();
    await new Promise((r) => setTimeout(r, 50));
    expect(app.requests).toHaveLength(0);
  });

  it('a stage that throws on the answer fails the call closed: 500 ERR_INTERNAL, recorded, nothing forwarded', async () => {
    // The policy is read before authentication and again to decide: the second read throws.
    let reads = 0;
    const policy = (): CompiledPolicy | null => {
      if (++reads > 1) throw new Error('boom');
      return TEST_POLICY;
    };
    const { app, g, proxy, session } = await rig(new Map<string, AuthResult>([['wait-bad', { ok: true, identity: identity('alice') }]]), policy);
    const res = h2Request(session, GET('wait-bad'));
    while (g.waiting() < 1) await new Promise((r) => setTimeout(r, 5));
    g.release();
    const r = await res;
    expect(r.headers[':status']).toBe(500);
    expect(proxy.decisions.at(-1)?.code).toBe('ERR_INTERNAL');
    expect(app.requests).toHaveLength(0);
  });
});
