import { describe, expect, it } from 'vitest';
import { createTokenBroker, MAX_CACHE_S, subjectExpiryMs, type TokenBroker, type TokenOutcome } from '../../../src/exchange/broker.ts';
import { backoffDelay } from '../../../src/lib/backoff.ts';
import type { GrantResult, TokenEndpointClient, TokenTarget } from '../../../src/exchange/token-client.ts';
import { silentLogger } from '../../../src/lib/log.ts';

/**
 * The exchanged-token cache with a scripted token endpoint and a fake clock: what is cached,
 * for how long, for whom, and how failures are paced. No network.
 */

const PAYMENTS: TokenTarget = Object.freeze({ name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: 'payments.charge' });
const LEDGER: TokenTarget = Object.freeze({ name: 'ledger', resource: 'urn:ward:ledger', audience: undefined, scope: '' });

interface Call {
  readonly kind: 'exchange' | 'cc';
  readonly subject: string | null;
  readonly target: string;
  resolve(r: GrantResult): void;
}

/** A token endpoint whose answers the test gives, one call at a time. */
function scriptedClient(): TokenEndpointClient & { calls: Call[] } {
  const calls: Call[] = [];
  const pending = (kind: Call['kind'], subject: string | null, t: TokenTarget): Promise<GrantResult> =>
    new Promise((resolve) => calls.push({ kind, subject, target: t.name, resolve }));
  return {
    issuer: 'https://idp.test',
    clientId: 'orders-sidecar',
    calls,
    exchange: (subject, t) => pending('exchange', subject, t),
    clientCredentials: (t) => pending('cc', null, t),
  };
}

/** A token endpoint that answers at once: the token names the subject and the target. `null`: no expires_in. */
function echoClient(lifetimeS: number | null = 120): TokenEndpointClient & { count: number } {
  const expiresInS = lifetimeS ?? undefined;
  const c = {
    issuer: 'https://idp.test',
    clientId: 'orders-sidecar',
    count: 0,
    exchange: async (subject: string, t: TokenTarget): Promise<GrantResult> => {
      c.count++;
      return { ok: true, token: `x(${subject})->${t.name}#${c.count}`, expiresInS };
    },
    clientCredentials: async (t: TokenTarget): Promise<GrantResult> => {
      c.count++;
      return { ok: true, token: `cc->${t.name}#${c.count}`, expiresInS };
    },
  };
  return c;
}

function broker(client: TokenEndpointClient, clock: { now: number }, over: Partial<Parameters<typeof createTokenBroker>[0]> = {}): TokenBroker {
  return createTokenBroker({
    client,
    cacheEntries: 100,
    renewBeforeMs: 30_000,
    refusalCacheMs: 5_000,
    retry: { initialMs: 1000, maxMs: 8000 },
    clock: () => clock.now,
    log: silentLogger,
    random: () => 1, // no jitter: the delay is the cap
    ...over,
  });
}

function jwt(claims: Record<string, unknown>): string {
  const b = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256', typ: 'at+jwt' })}.${b(claims)}.c2ln`;
}

const ok = (o: TokenOutcome): string => {
  if (!o.ok) throw new Error(`expected a token, got ${o.code} ${o.detail}`);
  return o.token;
};

describe('token broker: cache', () => {
  it('serves a cached token synchronously until renewBefore ahead of expires_in, then renews', async () => {
    const clock = { now: 1_000_000 };
    const idp = echoClient(120);
    const b = broker(idp, clock);
    const first = b.token(PAYMENTS, 'subject-a');
    expect(first).toBeInstanceOf(Promise);
    const t1 = ok(await first);
    clock.now += 89_999; // 120 s − 30 s renew margin = 90 s
    const hit = b.token(PAYMENTS, 'subject-a');
    expect(hit).not.toBeInstanceOf(Promise);
    expect(ok(hit as TokenOutcome)).toBe(t1);
    clock.now += 1;
    const renewed = ok(await b.token(PAYMENTS, 'subject-a'));
    expect(renewed).not.toBe(t1);
    expect(idp.count).toBe(2);
    expect(b.stats()).toMatchObject({ requests: 3, cacheHits: 1, exchanges: 2, issued: 2 });
    expect(b.stats().hitRatio).toBeCloseTo(1 / 3);
  });

  it('keeps a short-lived token for at most half its lifetime', async () => {
    const clock = { now: 0 };
    const b = broker(echoClient(20), clock); // renewBefore 30 s > 20 s lifetime
    await b.token(PAYMENTS, 's');
    clock.now = 9_999;
    expect(b.token(PAYMENTS, 's')).not.toBeInstanceOf(Promise);
    clock.now = 10_000;
    expect(b.token(PAYMENTS, 's')).toBeInstanceOf(Promise);
  });

  it('does not cache a token without expires_in', async () => {
    const clock = { now: 0 };
    const idp = echoClient(null);
    const b = broker(idp, clock);
    await b.token(PAYMENTS, 's');
    expect(b.token(PAYMENTS, 's')).toBeInstanceOf(Promise);
    expect(b.stats().cacheSize).toBe(0);
  });

  it('never keeps an exchanged token past the subject token\'s own exp', async () => {
    const clock = { now: 1_000_000_000_000 };
    const subject = jwt({ sub: 'alice', exp: clock.now / 1000 + 10 }); // expires in 10 s; the exchanged one in 120 s
    expect(subjectExpiryMs(subject)).toBe(clock.now + 10_000);
    const b = broker(echoClient(120), clock);
    await b.token(PAYMENTS, subject);
    clock.now += 9_999;
    expect(b.token(PAYMENTS, subject)).not.toBeInstanceOf(Promise);
    clock.now += 1;
    expect(b.token(PAYMENTS, subject)).toBeInstanceOf(Promise);
  });

  it('keys by subject token, destination and scopes: never serves one subject\'s token to another', async () => {
    const clock = { now: 0 };
    const b = broker(echoClient(), clock);
    const a = ok(await b.token(PAYMENTS, 'subject-a'));
    const bTok = ok(await b.token(PAYMENTS, 'subject-b'));
    const aLedger = ok(await b.token(LEDGER, 'subject-a'));
    const aWider = ok(await b.token({ ...PAYMENTS, scope: 'payments.charge payments.refund' }, 'subject-a'));
    expect(new Set([a, bTok, aLedger, aWider]).size).toBe(4);
    expect(a).toContain('x(subject-a)->payments');
    expect(bTok).toContain('x(subject-b)->payments');
    // each again, from the cache, each its own
    expect(ok(b.token(PAYMENTS, 'subject-b') as TokenOutcome)).toBe(bTok);
    expect(ok(b.token(PAYMENTS, 'subject-a') as TokenOutcome)).toBe(a);
    expect(ok(b.token(LEDGER, 'subject-a') as TokenOutcome)).toBe(aLedger);
  });

  it('keeps client-credentials tokens apart from exchanged ones', async () => {
    const clock = { now: 0 };
    const b = broker(echoClient(), clock);
    const cc = ok(await b.token(PAYMENTS, null));
    expect(cc).toMatch(/^cc->payments/);
    expect(ok(await b.token(PAYMENTS, 'cc->payments#1'))).toMatch(/^x\(/); // a subject spelled like a cc key is still a subject
    expect(ok(b.token(PAYMENTS, null) as TokenOutcome)).toBe(cc);
    expect(b.stats()).toMatchObject({ clientCredentials: 1, exchanges: 1 });
  });

  it('is bounded: the least recently used entry goes first', async () => {
    const clock = { now: 0 };
    const idp = echoClient();
    const b = broker(idp, clock, { cacheEntries: 2 });
    await b.token(PAYMENTS, 's1');
    await b.token(PAYMENTS, 's2');
    expect(b.token(PAYMENTS, 's1')).not.toBeInstanceOf(Promise); // a hit: s1 is now the youngest
    await b.token(PAYMENTS, 's3'); // evicts s2
    expect(b.stats().cacheSize).toBe(2);
    expect(b.token(PAYMENTS, 's1')).not.toBeInstanceOf(Promise);
    expect(b.token(PAYMENTS, 's2')).toBeInstanceOf(Promise);
  });

  it('with cacheEntries 0 asks every time', async () => {
    const clock = { now: 0 };
    const idp = echoClient();
    const b = broker(idp, clock, { cacheEntries: 0 });
    await b.token(PAYMENTS, 's');
    await b.token(PAYMENTS, 's');
    expect(idp.count).toBe(2);
  });
});

describe('token broker: cache lifetime cap', () => {
  it('caches a token at most MAX_CACHE_S, whatever its expires_in (regression: 1e306 s was Infinity ms, kept for ever)', async () => {
    let now = 0;
    let asked = 0;
    const client: TokenEndpointClient = {
      issuer: 'https://idp.test',
      clientId: 'orders-sidecar',
      exchange: async () => ({ ok: true, token: `t${++asked}`, expiresInS: 1e306 }),
      clientCredentials: async () => ({ ok: true, token: `t${++asked}`, expiresInS: 1e306 }),
    };
    const b = createTokenBroker({ client, cacheEntries: 10, renewBeforeMs: 0, refusalCacheMs: 0, retry: { initialMs: 1000, maxMs: 1000 }, clock: () => now, log: silentLogger, random: () => 1 });
    expect(await b.token(PAYMENTS, null)).toMatchObject({ ok: true, token: 't1' });
    now = MAX_CACHE_S * 1000 - 1;
    expect(await b.token(PAYMENTS, null)).toMatchObject({ ok: true, token: 't1' });
    now = MAX_CACHE_S * 1000;
    expect(await b.token(PAYMENTS, null)).toMatchObject({ ok: true, token: 't2' });
  });
});

describe('token broker: single-flight', () => {
  it('shares one request among concurrent identical calls, and only those', async () => {
    const clock = { now: 0 };
    const idp = scriptedClient();
    const b = broker(idp, clock);
    const same = Array.from({ length: 10 }, () => Promise.resolve(b.token(PAYMENTS, 'subject-a')));
    const other = b.token(PAYMENTS, 'subject-b');
    expect(idp.calls.map((c) => c.subject)).toEqual(['subject-a', 'subject-b']);
    idp.calls[1]?.resolve({ ok: true, token: 'for-b', expiresInS: 60 });
    idp.calls[0]?.resolve({ ok: true, token: 'for-a', expiresInS: 60 });
    expect((await Promise.all(same)).map(ok)).toEqual(Array(10).fill('for-a'));
    expect(ok(await other)).toBe('for-b');
    expect(b.stats()).toMatchObject({ requests: 11, coalesced: 9, exchanges: 2, inflight: 0 });
  });

  it('shares a refusal too, and the key is free once it settled', async () => {
    const clock = { now: 0 };
    const idp = scriptedClient();
    const b = broker(idp, clock, { refusalCacheMs: 0 });
    const both = [Promise.resolve(b.token(LEDGER, 's')), Promise.resolve(b.token(LEDGER, 's'))];
    idp.calls[0]?.resolve({ ok: false, kind: 'refused', oauthError: 'invalid_target', description: undefined, status: 400 });
    for (const r of await Promise.all(both)) expect(r).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target' });
    void b.token(LEDGER, 's');
    expect(idp.calls).toHaveLength(2);
  });
});

/** A token endpoint whose answers the test gives, one per request, in `pending`. */
function heldClient(): { pending: ((r: GrantResult) => void)[]; client: TokenEndpointClient } {
  const pending: ((r: GrantResult) => void)[] = [];
  const client: TokenEndpointClient = {
    issuer: 'https://idp.test',
    clientId: 'orders-sidecar',
    exchange: () => new Promise((r) => pending.push(r)),
    clientCredentials: () => new Promise((r) => pending.push(r)),
  };
  return { pending, client };
}

describe('token broker: failures', () => {
  it('calls in flight together when the IdP goes away are one failure: the back-off is retryInitialMs, and doubles only for a request sent after it (regression: each doubled it)', async () => {
    const { pending, client } = heldClient();
    let now = 1_000_000;
    const b = createTokenBroker({ client, cacheEntries: 100, renewBeforeMs: 30_000, refusalCacheMs: 5_000, retry: { initialMs: 1000, maxMs: 30_000 }, clock: () => now, log: silentLogger, random: () => 1 });
    const down: GrantResult = { ok: false, kind: 'unavailable', detail: 'ECONNREFUSED' };
    const calls = ['a', 'b', 'c', 'd', 'e', 'f'].map((s) => b.token(PAYMENTS, `subject-${s}`));
    expect(pending).toHaveLength(6);
    for (const resolve of pending.splice(0)) resolve(down);
    await Promise.all(calls.map(async (c) => c));
    expect(b.stats().backoffMs).toBe(1000);
    // The next request, sent once the back-off is over, fails too: a further failure, 2 s.
    now += 1001;
    const next = b.token(PAYMENTS, 'subject-g');
    pending.splice(0)[0]?.(down);
    await next;
    expect(b.stats().backoffMs).toBe(2000);
  });

  it('an answer to a request sent before the last failure does not end the back-off', async () => {
    const { pending, client } = heldClient();
    const b = createTokenBroker({ client, cacheEntries: 100, renewBeforeMs: 0, refusalCacheMs: 0, retry: { initialMs: 1000, maxMs: 30_000 }, clock: () => 5_000_000, log: silentLogger, random: () => 1 });
    const early = b.token(PAYMENTS, 'subject-a');
    const failing = b.token(PAYMENTS, 'subject-b');
    const [resolveEarly, resolveFailing] = pending.splice(0);
    resolveFailing?.({ ok: false, kind: 'unavailable', detail: 'ECONNREFUSED' });
    await failing;
    resolveEarly?.({ ok: true, token: 't', expiresInS: 60 });
    expect(await early).toMatchObject({ ok: true });
    expect(b.stats().backoffMs).toBe(1000);
  });

  it('remembers a refusal for refusalCacheMs, for that subject and destination only', async () => {
    const clock = { now: 0 };
    const idp = scriptedClient();
    const b = broker(idp, clock);
    const p = b.token(LEDGER, 's');
    idp.calls[0]?.resolve({ ok: false, kind: 'refused', oauthError: 'invalid_target', description: 'client may not get tokens for ledger', status: 400 });
    const r = await p;
    expect(r).toEqual({ ok: false, code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target', detail: 'invalid_target: client may not get tokens for ledger' });
    clock.now = 4_999;
    expect(b.token(LEDGER, 's')).toBe(r); // sync, same refusal, IdP not asked
    void b.token(LEDGER, 'other-subject');
    expect(idp.calls).toHaveLength(2);
    clock.now = 5_000;
    void b.token(LEDGER, 's');
    expect(idp.calls).toHaveLength(3);
    expect(b.stats()).toMatchObject({ refusalHits: 1, refused: 1, cacheHits: 0 });
  });

  it('backs off after the IdP is unreachable: fails at once, doubling up to retryMaxMs; cached tokens still served', async () => {
    const clock = { now: 0 };
    const idp = scriptedClient();
    const b = broker(idp, clock);
    // one good token first
    const good = b.token(PAYMENTS, 'cached');
    idp.calls[0]?.resolve({ ok: true, token: 'cached-token', expiresInS: 300 });
    await good;

    const down = { ok: false, kind: 'unavailable', detail: 'ECONNREFUSED' } as const;
    const first = b.token(PAYMENTS, 's');
    idp.calls[1]?.resolve(down);
    expect(await first).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null });
    // within the back-off: no request, immediate failure
    expect(b.token(PAYMENTS, 's')).toMatchObject({ code: 'ERR_EXCHANGE_UNAVAILABLE' });
    expect(b.token(LEDGER, 'someone-else')).toMatchObject({ code: 'ERR_EXCHANGE_UNAVAILABLE' });
    expect(ok(b.token(PAYMENTS, 'cached') as TokenOutcome)).toBe('cached-token');
    expect(idp.calls).toHaveLength(2);
    expect(b.stats().backoffMs).toBe(1000);

    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      clock.now += b.stats().backoffMs;
      const start = clock.now;
      const p = b.token(PAYMENTS, 's');
      idp.calls.at(-1)?.resolve(down);
      await p;
      delays.push(b.stats().backoffMs + (clock.now - start));
    }
    expect(delays).toEqual([2000, 4000, 8000, 8000, 8000]);
    expect(b.stats()).toMatchObject({ unavailable: 6, backoffRejections: 2 });

    // the IdP answers again: the back-off is over
    clock.now += b.stats().backoffMs;
    const back = b.token(PAYMENTS, 's');
    idp.calls.at(-1)?.resolve({ ok: true, token: 'fresh', expiresInS: 60 });
    expect(ok(await back)).toBe('fresh');
    expect(b.stats().backoffMs).toBe(0);
    void b.token(LEDGER, 'someone-else');
    expect(idp.calls.at(-1)?.subject).toBe('someone-else');
  });

  it('a refusal also ends a back-off (the IdP answered)', async () => {
    const clock = { now: 0 };
    const idp = scriptedClient();
    const b = broker(idp, clock);
    const p1 = b.token(PAYMENTS, 'a');
    idp.calls[0]?.resolve({ ok: false, kind: 'unavailable', detail: 'timeout' });
    await p1;
    clock.now += 1000;
    const p2 = b.token(PAYMENTS, 'b');
    idp.calls[1]?.resolve({ ok: false, kind: 'refused', oauthError: 'invalid_request', description: undefined, status: 400 });
    await p2;
    expect(b.stats().backoffMs).toBe(0);
  });

  it('a client that throws fails closed as unavailable', async () => {
    const clock = { now: 0 };
    const b = broker(
      {
        issuer: 'x',
        clientId: 'y',
        exchange: () => Promise.reject(new Error('boom')),
        clientCredentials: () => Promise.reject(new Error('boom')),
      },
      clock,
    );
    expect(await b.token(PAYMENTS, 's')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE' });
  });

  it('backoffDelay: equal jitter within [cap/2, cap]', () => {
    const r = { initialMs: 500, maxMs: 30_000 };
    expect(backoffDelay(0, r, () => 0)).toBe(250);
    expect(backoffDelay(0, r, () => 1)).toBe(500);
    expect(backoffDelay(3, r, () => 0.5)).toBe(3000);
    expect(backoffDelay(50, r, () => 1)).toBe(30_000);
  });

  it('subjectExpiryMs: undefined for opaque tokens and JWTs without exp', () => {
    expect(subjectExpiryMs('opaque-handle')).toBeUndefined();
    expect(subjectExpiryMs(jwt({ sub: 'x' }))).toBeUndefined();
  });
});
