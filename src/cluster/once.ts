/**
 * One run of a task per key across the workers of a sidecar (node:cluster), the others getting
 * its result: the browser-session refresh (session/stage.ts), which an IdP that rotates refresh
 * tokens accepts once per token, then treats as reuse and revokes the grant.
 *
 * The primary holds a broker: the first worker to claim a key runs the task, the workers that
 * claim it meanwhile wait for its result, and a result the runner asks to keep answers later
 * claims for `keepMs`. A runner that dies, or declines (it gave up waiting before its turn
 * came), hands the task to one of its waiters. Results travel as JSON (node:cluster's IPC), so a
 * value is JSON data, `undefined` sent as null; the worker that uses one checks it (IPC carries
 * only what ward sends, but a value is not trusted for its type).
 */

/** What a runner reports: the value, and how long later claims get it instead of running again. */
export interface OnceResult {
  readonly value: unknown;
  /** 0: not kept (the next claim runs the task again). */
  readonly keepMs: number;
}

/** Keys the broker tracks at most; past that a claim runs on its own (bounded, not shared). */
export const MAX_ONCE_KEYS = 10_000;
/** Longest a result is kept, whatever the runner asks. */
export const MAX_KEEP_MS = 60_000;
/**
 * Longest a worker waits for a result another worker is computing, before giving up; and
 * longest a runner holds the others waiting (its task goes on; they are told there is none).
 */
export const ONCE_WAIT_MS = 30_000;
/** How often the primary drops kept results past their window (they hold session tokens). */
export const SWEEP_MS = 5_000;

interface Entry<W> {
  /** The worker running the task; null once a kept result is in. */
  owner: W | null;
  waiters: W[];
  value: unknown;
  /** When a kept result stops answering (ms). */
  until: number;
}

/** The primary's side; `W` is a worker handle, `run` and `give` send to it. */
export class OnceBroker<W> {
  readonly #entries = new Map<string, Entry<W>>();
  readonly #run: (w: W, key: string) => void;
  readonly #give: (w: W, key: string, value: unknown) => void;
  readonly #now: () => number;

  constructor(run: (w: W, key: string) => void, give: (w: W, key: string, value: unknown) => void, now: () => number = Date.now) {
    this.#run = run;
    this.#give = give;
    this.#now = now;
  }

  get size(): number {
    return this.#entries.size;
  }

  claim(w: W, key: string): void {
    const now = this.#now();
    let e = this.#entries.get(key);
    if (e !== undefined && e.owner === null && e.until <= now) {
      this.#entries.delete(key);
      e = undefined;
    }
    if (e === undefined) {
      if (this.#entries.size >= MAX_ONCE_KEYS) this.#evict(now);
      if (this.#entries.size < MAX_ONCE_KEYS) this.#entries.set(key, { owner: w, waiters: [], value: undefined, until: 0 });
      this.#run(w, key);
    } else if (e.owner === null) this.#give(w, key, e.value);
    else if (e.owner !== w && !e.waiters.includes(w)) e.waiters.push(w);
  }

  /** The runner's result: to every waiter, and kept for later claims when it asks. */
  done(w: W, key: string, r: OnceResult): void {
    const e = this.#entries.get(key);
    if (e === undefined || e.owner !== w) return; // not tracked (over the bound), or not its task
    for (const x of e.waiters) this.#give(x, key, r.value);
    const keep = Math.min(Math.max(0, r.keepMs), MAX_KEEP_MS);
    if (keep > 0) {
      e.owner = null;
      e.waiters = [];
      e.value = r.value;
      e.until = this.#now() + keep;
    } else this.#entries.delete(key);
  }

  /** A worker died: its tasks go to one of their waiters (which runs it), its waits are dropped. */
  gone(w: W): void {
    for (const [key, e] of this.#entries) this.#leave(key, e, w);
  }

  /**
   * A worker no longer wants `key`: it gave up waiting, or was asked to run a task it no longer
   * has. Its wait is dropped; a task it was to run goes to the next waiter (found in review: it
   * answered "no result", and the workers still waiting got none though nobody had run it).
   */
  decline(w: W, key: string): void {
    const e = this.#entries.get(key);
    if (e !== undefined) this.#leave(key, e, w);
  }

  /** Kept results past their window out (found in review: they stayed until their key came back). */
  sweep(): void {
    const now = this.#now();
    for (const [key, e] of this.#entries) if (e.owner === null && e.until <= now) this.#entries.delete(key);
  }

  #leave(key: string, e: Entry<W>, w: W): void {
    e.waiters = e.waiters.filter((x) => x !== w);
    if (e.owner !== w) return;
    const next = e.waiters.shift();
    if (next === undefined) this.#entries.delete(key);
    else {
      e.owner = next;
      this.#run(next, key);
    }
  }

  /** Expired results out; then, if still full, the oldest kept result (never a running task). */
  #evict(now: number): void {
    for (const [key, e] of this.#entries) if (e.owner === null && e.until <= now) this.#entries.delete(key);
    if (this.#entries.size < MAX_ONCE_KEYS) return;
    for (const [key, e] of this.#entries) {
      if (e.owner === null) {
        this.#entries.delete(key);
        return;
      }
    }
  }
}

interface Waiting {
  readonly promise: Promise<unknown>;
  readonly resolve: (v: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly task: () => Promise<OnceResult>;
  timer: NodeJS.Timeout;
}

/**
 * A worker's side: `claim`, `done` and `decline` send to the primary; `connected` is false once it
 * is gone.
 */
export class OnceClient {
  readonly #waiting = new Map<string, Waiting>();
  readonly #claim: (key: string) => void;
  readonly #done: (key: string, r: OnceResult) => void;
  readonly #decline: (key: string) => void;
  readonly #connected: () => boolean;
  readonly #waitMs: number;

  constructor(
    send: { readonly claim: (key: string) => void; readonly done: (key: string, r: OnceResult) => void; readonly decline: (key: string) => void },
    connected: () => boolean,
    waitMs: number = ONCE_WAIT_MS,
  ) {
    this.#claim = send.claim;
    this.#done = send.done;
    this.#decline = send.decline;
    this.#connected = connected;
    this.#waitMs = waitMs;
  }

  /** The value of `task` for `key`: run here, or by another worker, or kept from a recent run. */
  once(key: string, task: () => Promise<OnceResult>): Promise<unknown> {
    const w = this.#waiting.get(key);
    if (w !== undefined) return w.promise;
    // no primary (it is gone and this worker drains): nobody to share with
    if (!this.#connected()) return task().then((r) => r.value);
    let resolve: (v: unknown) => void = () => {};
    let reject: (err: Error) => void = () => {};
    const promise = new Promise<unknown>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timer = setTimeout(() => {
      this.#waiting.delete(key);
      this.#decline(key); // its turn, should it come, goes to a worker still waiting
      reject(new Error(`no result for a shared task within ${this.#waitMs} ms`));
    }, this.#waitMs);
    timer.unref();
    this.#waiting.set(key, { promise, resolve, reject, task, timer });
    this.#claim(key);
    return promise;
  }

  /**
   * The primary: run the task of `key` here. This worker waits for its own task however long it
   * takes (found in review: it timed out on its own refresh, then waited again for a result only
   * waiters were sent); the others are released after `waitMs` with no result.
   */
  onRun(key: string): void {
    const w = this.#waiting.get(key);
    if (w === undefined) {
      this.#decline(key); // given up on meanwhile: the next waiter runs it
      return;
    }
    clearTimeout(w.timer);
    let released = false;
    // After `waitMs` the others are told there is no result; after four times that (a task that
    // never settles: each provider call has its own timeout) this worker gives up too.
    let turns = 0;
    const tick = (): void => {
      turns++;
      if (!released) {
        released = true;
        this.#done(key, { value: null, keepMs: 0 });
      }
      if (turns < 4) {
        w.timer = setTimeout(tick, this.#waitMs);
        w.timer.unref();
      } else if (this.#waiting.get(key) === w) {
        this.#waiting.delete(key);
        w.reject(new Error(`a shared task ran for over ${4 * this.#waitMs} ms`));
      }
    };
    w.timer = setTimeout(tick, this.#waitMs);
    w.timer.unref();
    w.task().then(
      (r) => {
        clearTimeout(w.timer);
        if (!released) this.#done(key, { value: r.value ?? null, keepMs: r.keepMs });
        this.#settle(key, w, r.value);
      },
      (err: unknown) => {
        clearTimeout(w.timer);
        if (!released) this.#done(key, { value: null, keepMs: 0 });
        if (this.#waiting.get(key) === w) this.#waiting.delete(key);
        w.reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  /** The primary: the result of `key`, run elsewhere or kept. */
  onValue(key: string, value: unknown): void {
    const w = this.#waiting.get(key);
    if (w !== undefined) this.#settle(key, w, value);
  }

  #settle(key: string, w: Waiting, value: unknown): void {
    if (this.#waiting.get(key) === w) this.#waiting.delete(key);
    clearTimeout(w.timer);
    w.resolve(value);
  }
}
