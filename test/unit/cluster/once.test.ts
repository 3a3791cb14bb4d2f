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
function mesh(waitMs: number | Record<string, number> = 1000): { clients: Map<string, OnceClient>; b: OnceBroker<string>; connected: { v: boolean } } {
  const clients = new Map<string, OnceClient>();
  const connected = { v: true };
  const b: OnceBroker<string> = new OnceBroker<string>(
    (w, key) => queueMicrotask(() => clients.get(w)?.onRun(key)),
    (w, key, value) => queueMicrotask(() => clients.get(w)?.onValue(key, value)),
  );
  const waits = typeof waitMs === 'number' ? { w1: waitMs, w2: waitMs } : waitMs;
  for (const [w, wait] of Object.entries(waits)) {
    clients.set(
      w,
      new OnceClient(
        {
          claim: (key) => queueMicrotask(() => b.claim(w, key)),
          done: (key, r) => queueMicrotask(() => b.done(w, key, r)),
          decline: (key) => queueMicrotask(() => b.decline(w, key)),
        },
        () => connected.v,
        wait,
      ),
    );
  }
  return { clients, b, connected };
}

describe('OnceBroker sweep', () => {
  it('drops kept results past their window, which hold session tokens (regression: they stayed until their key came back)', () => {
    const { b, t } = broker();
    b.claim('w1', 'sid:tok');
    b.done('w1', 'sid:tok', { value: { ok: true, session: { r: 'refresh-token' } }, keepMs: 30_000 });
    b.claim('w1', 'running');
    t.now += 29_999;
    b.sweep();
    expect(b.size).toBe(2);
    t.now += 1;
    b.sweep();
    expect(b.size).toBe(1); // the running task stays
  });

  it('a waiter that declines leaves the line; a runner that declines hands the task to the next waiter', () => {
    const { b, sent } = broker();
    b.claim('w1', 'k');
    b.claim('w2', 'k');
    b.claim('w3', 'k');
    b.decline('w2', 'k');
    b.decline('w1', 'k');
    expect(sent).toEqual(['run:w1:k', 'run:w3:k']);
    b.done('w3', 'k', { value: 1, keepMs: 0 });
    expect(sent.filter((m) => m.startsWith('give:'))).toEqual([]);
  });
});

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

  it('a runner that hangs: the others get no result after waitMs (null), the runner gives up after four times that, and the key is free again', async () => {
    const { clients, b } = mesh(50);
    const hang = (): Promise<OnceResult> => new Promise(() => {});
    const first = expect(clients.get('w1')?.once('k', hang)).rejects.toThrow('ran for over 200 ms');
    await new Promise((r) => setTimeout(r, 5));
    expect(await clients.get('w2')?.once('k', hang)).toBeNull();
    await first;
    expect(b.size).toBe(0);
    expect(await clients.get('w2')?.once('k', async () => ({ value: 'ran again', keepMs: 0 }))).toBe('ran again');
  });

  it('the runner waits for its own task past waitMs, and a second ask meanwhile gets the same run (regression: it timed out on its own refresh, then waited for a result sent only to waiters)', async () => {
    const { clients } = mesh({ w1: 50 });
    let runs = 0;
    const slow = async (): Promise<OnceResult> => {
      runs++;
      await new Promise((r) => setTimeout(r, 100));
      return { value: `run ${runs}`, keepMs: 1000 };
    };
    const first = clients.get('w1')?.once('k', slow);
    await new Promise((r) => setTimeout(r, 60)); // past w1's waitMs, its task still running
    const second = clients.get('w1')?.once('k', slow);
    expect(await first).toBe('run 1');
    expect(await second).toBe('run 1');
    expect(runs).toBe(1);
  });

  it('a runner that died is replaced by a waiter still waiting, not by one that gave up (regression: that one answered no result, and the rest got null)', async () => {
    const { clients, b } = mesh({ w1: 10_000, w2: 30, w3: 10_000 });
    const hang = (): Promise<OnceResult> => new Promise(() => {});
    void clients.get('w1')?.once('k', hang).catch(() => {});
    await new Promise((r) => setTimeout(r, 5));
    const w2 = clients.get('w2')?.once('k', hang).catch((e: Error) => e.message);
    await new Promise((r) => setTimeout(r, 5));
    const w3 = clients.get('w3')?.once('k', async () => ({ value: 'w3 ran it', keepMs: 1000 }));
    expect(await w2).toMatch(/within 30 ms/);
    b.gone('w1');
    expect(await w3).toBe('w3 ran it');
  });

  it('runs the task alone when the primary is gone', async () => {
    const { clients, connected } = mesh();
    connected.v = false;
    expect(await clients.get('w1')?.once('k', async () => ({ value: 7, keepMs: 0 }))).toBe(7);
  });
});
