import { describe, expect, it } from 'vitest';
import { MAX_KEEP_MS, MAX_ONCE_KEYS, OnceBroker, OnceClient, type OnceResult } from '../../../src/cluster/once.ts';

/** A broker whose messages are recorded as `run:<worker>:<key>` and `give:<worker>:<key>=<value>`. */
function broker(): { b: OnceBroker<string>; sent: string[]; t: { now: number } } {
  const sent: string[] = [];
  const t = { now: 1_000_000 };
  const b = new OnceBroker<string>(
    (w, key) => sent.push(`run:${w}:${key}`),
    (w, key, value) => sent.push(`give:${w}:${key}=${JSON.stringify(value)}`),
    () => t.now,
  );
  return { b, sent, t };
}

describe('OnceBroker (the primary)', () => {
  it('runs a key in the first worker to claim it; the others wait for its result, which is kept for keepMs', () => {
    const { b, sent, t } = broker();
    b.claim('w1', 'k');
    b.claim('w2', 'k');
    b.claim('w2', 'k'); // a worker waits once
    b.claim('w1', 'k'); // the runner's own second claim: it is running it
    expect(sent).toEqual(['run:w1:k']);
    b.done('w2', 'k', { value: 'forged', keepMs: 1000 }); // not the runner: ignored
    b.done('w1', 'k', { value: { ok: true }, keepMs: 1000 });
    expect(sent).toEqual(['run:w1:k', 'give:w2:k={"ok":true}']);
    t.now += 999;
    b.claim('w3', 'k');
    expect(sent.at(-1)).toBe('give:w3:k={"ok":true}');
    t.now += 1;
    b.claim('w3', 'k'); // kept until then, not after: run again
    expect(sent.at(-1)).toBe('run:w3:k');
  });

  it('does not keep a result with keepMs 0 (a provider that was down is asked again), but gives it to those waiting', () => {
    const { b, sent } = broker();
    b.claim('w1', 'k');
    b.claim('w2', 'k');
    b.done('w1', 'k', { value: 'down', keepMs: 0 });
    expect(sent).toEqual(['run:w1:k', 'give:w2:k="down"']);
    expect(b.size).toBe(0);
    b.claim('w2', 'k');
    expect(sent.at(-1)).toBe('run:w2:k');
  });

  it('keeps a result at most MAX_KEEP_MS, whatever the runner asks', () => {
    const { b, sent, t } = broker();
    b.claim('w1', 'k');
    b.done('w1', 'k', { value: 1, keepMs: 10 * MAX_KEEP_MS });
    t.now += MAX_KEEP_MS;
    b.claim('w2', 'k');
    expect(sent.at(-1)).toBe('run:w2:k');
  });

  it('hands the task of a worker that died to one of its waiters, and forgets the dead one as a waiter', () => {
    const { b, sent } = broker();
    b.claim('w1', 'k');
    b.claim('w2', 'k');
    b.claim('w3', 'k');
    b.claim('w3', 'j');
    b.claim('w1', 'j');
    b.gone('w1');
    expect(sent.slice(2)).toEqual(['run:w2:k']);
    b.done('w2', 'k', { value: 2, keepMs: 1000 });
    expect(sent.at(-1)).toBe('give:w3:k=2');
    b.done('w3', 'j', { value: 3, keepMs: 0 });
    expect(sent.filter((m) => m.startsWith('give:w1'))).toEqual([]);
    b.gone('w2');
    b.gone('w3');
    expect(b.size).toBe(1); // k's kept result (no owner)
  });

  it('drops a task whose runner died with nobody waiting', () => {
    const { b, sent } = broker();
    b.claim('w1', 'k');
    b.gone('w1');
    expect(b.size).toBe(0);
    b.claim('w2', 'k');
    expect(sent.at(-1)).toBe('run:w2:k');
  });

  it('tracks at most MAX_ONCE_KEYS keys: expired and then the oldest kept results go first; past that a claim runs on its own', () => {
    const { b, sent, t } = broker();
    for (let i = 0; i < MAX_ONCE_KEYS; i++) {
      b.claim('w', `k${i}`);
      if (i < 2) b.done('w', `k${i}`, { value: i, keepMs: i === 0 ? 10 : 60_000 });
    }
    expect(b.size).toBe(MAX_ONCE_KEYS);
    t.now += 10; // k0 expired
    b.claim('w', 'new1');
    expect(b.size).toBe(MAX_ONCE_KEYS);
    b.claim('w', 'new2'); // k1, kept, is evicted for it
    expect(b.size).toBe(MAX_ONCE_KEYS);
    b.claim('x', 'k1');
    expect(sent.at(-1)).toBe('run:x:k1');
    // every entry now a running task: the claim runs, untracked, and its result is dropped
    b.claim('y', 'overflow');
    expect(sent.at(-1)).toBe('run:y:overflow');
    b.claim('z', 'overflow');
    expect(sent.at(-1)).toBe('run:z:overflow');
    b.done('y', 'overflow', { value: 1, keepMs: 1000 });
    expect(b.size).toBe(MAX_ONCE_KEYS);
  });
});

/** A worker's client wired to a broker in the same process (the IPC left out). */
function mesh(waitMs = 1000): { clients: Map<string, OnceClient>; b: OnceBroker<string>; connected: { v: boolean } } {
  const clients = new Map<string, OnceClient>();
  const connected = { v: true };
  const b: OnceBroker<string> = new OnceBroker<string>(
    (w, key) => queueMicrotask(() => clients.get(w)?.onRun(key)),
    (w, key, value) => queueMicrotask(() => clients.get(w)?.onValue(key, value)),
  );
  for (const w of ['w1', 'w2']) {
    clients.set(
      w,
      new OnceClient(
        (key) => queueMicrotask(() => b.claim(w, key)),
        (key, r) => queueMicrotask(() => b.done(w, key, r)),
        () => connected.v,
        waitMs,
      ),
    );
  }
  return { clients, b, connected };
}

describe('OnceClient (a worker)', () => {
  it('two workers asking for the same key get the value of one run', async () => {
    const { clients } = mesh();
    let runs = 0;
    const task = async (): Promise<OnceResult> => {
      runs++;
      await new Promise((r) => setTimeout(r, 20));
      return { value: { n: runs }, keepMs: 1000 };
    };
    const [a, b] = await Promise.all([clients.get('w1')?.once('k', task), clients.get('w2')?.once('k', task)]);
    expect(runs).toBe(1);
    expect(a).toEqual({ n: 1 });
    expect(b).toEqual({ n: 1 });
    // kept: a later ask gets it without a run
    expect(await clients.get('w2')?.once('k', task)).toEqual({ n: 1 });
    expect(runs).toBe(1);
  });

  it('a task that throws rejects in its worker and frees the others (they get null)', async () => {
    const { clients } = mesh();
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const failing = async (): Promise<OnceResult> => {
      await gate;
      throw new Error('boom');
    };
    const first = clients.get('w1')?.once('k', failing);
    await new Promise((r) => setTimeout(r, 5));
    const second = clients.get('w2')?.once('k', failing);
    await new Promise((r) => setTimeout(r, 5));
    release();
    await expect(first).rejects.toThrow('boom');
    expect(await second).toBeNull();
  });

  it('gives up after waitMs when no result comes (a runner that hangs), with an error', async () => {
    const { clients } = mesh(50);
    const hang = (): Promise<OnceResult> => new Promise(() => {});
    const first = expect(clients.get('w1')?.once('k', hang)).rejects.toThrow('within 50 ms');
    await new Promise((r) => setTimeout(r, 5));
    await expect(clients.get('w2')?.once('k', hang)).rejects.toThrow('no result for a shared task within 50 ms');
    await first;
  });

  it('runs the task alone when the primary is gone', async () => {
    const { clients, connected } = mesh();
    connected.v = false;
    expect(await clients.get('w1')?.once('k', async () => ({ value: 7, keepMs: 0 }))).toBe(7);
  });
});
