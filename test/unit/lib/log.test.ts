import { describe, expect, it } from 'vitest';
import { perSecond } from '../../../src/lib/log.ts';

describe('perSecond', () => {
  it('allows max lines a second, then tells the next allowed line how many were left out', () => {
    let t = 10_000;
    const lines = perSecond(3, () => t);
    expect([lines.take(), lines.take(), lines.take()]).toEqual([0, 0, 0]);
    expect([lines.take(), lines.take()]).toEqual([-1, -1]);
    t += 999;
    expect(lines.take()).toBe(-1);
    t += 1;
    expect(lines.take()).toBe(3);
    expect(lines.take()).toBe(0);
  });
});
