/**
 * Concurrent identical requests share one: the first caller for a key starts the work, callers
 * arriving while it runs get the same promise, and the key is free again once it settles (so a
 * failure is not remembered here; callers decide what to cache).
 */
export class SingleFlight<K, V> {
  readonly #inflight = new Map<K, Promise<V>>();

  /** Requests in flight. */
  get size(): number {
    return this.#inflight.size;
  }

  /** The running promise for `key`, if any. */
  get(key: K): Promise<V> | undefined {
    return this.#inflight.get(key);
  }

  /** Starts `work` for `key`; the caller checked `get(key)` first. */
  start(key: K, work: () => Promise<V>): Promise<V> {
    const p = work().finally(() => {
      if (this.#inflight.get(key) === p) this.#inflight.delete(key);
    });
    this.#inflight.set(key, p);
    return p;
  }
}
