import { describe, expect, it, vi } from 'vitest';
import { Lru } from '../../../src/lib/lru.ts';

// src/lib/lru.ts is owned by authn (its only user so far); its test lives here.
describe('Lru', () => {
  it('evicts the least recently used entry', () => {
    const c = new Lru<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    expect(c.get('a')).toBe(1); // a is now the youngest
    c.set('c', 3);
    expect(c.get('b')).toBeUndefined();
    expect(c.get('a')).toBe(1);
    expect(c.get('c')).toBe(3);
    expect(c.size).toBe(2);
  });

  it('peek does not refresh recency; set on an existing key replaces it', () => {
    const c = new Lru<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    expect(c.peek('a')).toBe(1);
    c.set('b', 20);
    c.set('c', 3);
    expect(c.peek('a')).toBeUndefined();
    expect(c.peek('b')).toBe(20);
  });

  it('capacity 0 stores nothing', () => {
    const c = new Lru<string, number>(0);
    c.set('a', 1);
    expect(c.get('a')).toBeUndefined();
    expect(c.size).toBe(0);
  });

  it('prune and delete remove entries', () => {
    const c = new Lru<string, number>(10);
    for (let i = 0; i < 5; i++) c.set(`k${i}`, i);
    expect(c.prune((v) => v % 2 === 0)).toBe(3);
    expect(c.size).toBe(2);
    expect(c.delete('k1')).toBe(true);
    c.clear();
    expect(c.size).toBe(0);
  });

  it('a hit on a fresh entry touches nothing: no delete and re-insert per hit', () => {
    const c = new Lru<string, number>(10_000);
    for (let i = 0; i < 100; i++) c.set(`k${i}`, i);
    const del = vi.spyOn(Map.prototype, 'delete');
    try {
      for (let i = 0; i < 1000; i++) expect(c.get('k99')).toBe(99);
      expect(del).not.toHaveBeenCalled();
    } finally {
      del.mockRestore();
    }
  });

  it('keeps an entry that is hit now and then, and evicts the others oldest first', () => {
    const c = new Lru<string, number>(8); // re-inserted once more than 2 operations old
    for (let i = 0; i < 8; i++) c.set(`k${i}`, i);
    for (let i = 8; i < 40; i++) {
      if (i % 4 === 0) expect(c.get('k0')).toBe(0); // hit once every 4 inserts
      c.set(`k${i}`, i);
    }
    expect(c.get('k0')).toBe(0);
    expect(c.size).toBe(8);
    // The other survivors are the 7 most recent inserts.
    for (let i = 33; i < 40; i++) expect(c.peek(`k${i}`)).toBe(i);
    expect(c.peek('k32')).toBeUndefined();
  });

  it('rejects a negative or fractional capacity', () => {
    expect(() => new Lru(-1)).toThrow(RangeError);
    expect(() => new Lru(1.5)).toThrow(RangeError);
  });
});
