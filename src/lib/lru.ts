/**
 * A small bounded least-recently-used map. A `Map` iterates in insertion order, so re-inserting
 * on every hit keeps the oldest entry first and eviction is `keys().next()`: O(1) for get, set
 * and evict, no linked list to maintain. Capacity 0 disables it (every `set` is dropped), so
 * callers need no special case for "cache off".
 */
export class Lru<K, V> {
  readonly capacity: number;
  readonly #map = new Map<K, V>();

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`LRU capacity must be a non-negative integer, got ${capacity}`);
    this.capacity = capacity;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The value, marked most recently used; `undefined` when absent. */
  get(key: K): V | undefined {
    const map = this.#map;
    const value = map.get(key);
    if (value === undefined) return undefined;
    // Re-insert to move it to the young end of the iteration order.
    map.delete(key);
    map.set(key, value);
    return value;
  }

  /** The value without touching recency (for checks that must not keep an entry alive). */
  peek(key: K): V | undefined {
    return this.#map.get(key);
  }

  set(key: K, value: V): void {
    if (this.capacity === 0) return;
    const map = this.#map;
    if (map.has(key)) map.delete(key);
    else if (map.size >= this.capacity) {
      const oldest = map.keys().next();
      if (oldest.done !== true) map.delete(oldest.value);
    }
    map.set(key, value);
  }

  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }

  /** Drops every entry for which `drop` returns true (O(n); for reloads, not the request path). */
  prune(drop: (value: V, key: K) => boolean): number {
    let n = 0;
    for (const [k, v] of this.#map) {
      if (drop(v, k)) {
        this.#map.delete(k);
        n++;
      }
    }
    return n;
  }
}
