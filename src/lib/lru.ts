/**
 * A small bounded least-recently-used map. A `Map` iterates in insertion order, so re-inserting
 * an entry moves it to the young end and eviction is `keys().next()`: O(1) for get, set and
 * evict, no linked list to maintain. Capacity 0 disables it (every `set` is dropped), so callers
 * need no special case for "cache off".
 *
 * A hit re-inserts only an entry that has aged: one set or refreshed more than a quarter of the
 * capacity of operations ago. Re-inserting on every hit cost a delete and a set each time, and
 * V8 rebuilds a `Map`'s table once its deleted slots fill it: a new table every few hits for a
 * small map, a rebuild of the whole table every few thousand hits for a large one, on the request
 * path (the verified-token cache is hit on every call). An entry hit at least once in any three
 * quarters of the capacity's operations is never evicted; eviction order is otherwise as in a
 * strict LRU.
 */
interface Slot<V> {
  value: V;
  /** The operation count when the entry was set or last moved to the young end. */
  seq: number;
}

export class Lru<K, V> {
  readonly capacity: number;
  readonly #map = new Map<K, Slot<V>>();
  /** Sets and re-insertions so far. */
  #seq = 0;
  readonly #stale: number;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`LRU capacity must be a non-negative integer, got ${capacity}`);
    this.capacity = capacity;
    this.#stale = capacity >>> 2;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The value, marked recently used; `undefined` when absent. */
  get(key: K): V | undefined {
    const slot = this.#map.get(key);
    if (slot === undefined) return undefined;
    if (this.#seq - slot.seq > this.#stale) {
      // Aged: move it to the young end of the iteration order.
      slot.seq = ++this.#seq;
      this.#map.delete(key);
      this.#map.set(key, slot);
    }
    return slot.value;
  }

  /** The value without touching recency (for checks that must not keep an entry alive). */
  peek(key: K): V | undefined {
    return this.#map.get(key)?.value;
  }

  set(key: K, value: V): void {
    if (this.capacity === 0) return;
    const map = this.#map;
    if (map.has(key)) map.delete(key);
    else if (map.size >= this.capacity) {
      const oldest = map.keys().next();
      if (oldest.done !== true) map.delete(oldest.value);
    }
    map.set(key, { value, seq: ++this.#seq });
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
    for (const [k, slot] of this.#map) {
      if (drop(slot.value, k)) {
        this.#map.delete(k);
        n++;
      }
    }
    return n;
  }
}
