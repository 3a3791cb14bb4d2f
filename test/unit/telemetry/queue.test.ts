import { afterEach, describe, expect, it, vi } from 'vitest';
import { BatchQueue, newCounters } from '../../../src/telemetry/export.ts';

describe('bounded batch queue', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('drops and counts when full, never blocks, and exports one batch at a time', () => {
    const counters = newCounters();
    const calls: { batch: number[]; done: (ok: boolean) => void }[] = [];
    const q = new BatchQueue<number>({ maxSize: 5, batchSize: 2, delayMs: 1000 }, (batch, done) => calls.push({ batch: [...batch], done }), counters);
    for (let i = 0; i < 10; i++) q.push(i);
    // the first full batch went out at once; while it is in flight the queue fills and drops
    expect(calls.map((c) => c.batch)).toEqual([[0, 1]]);
    expect(q.size).toBe(5);
    expect(counters.droppedQueueFull).toBe(3);
    calls[0]?.done(true);
    expect(counters.exported).toBe(2);
    expect(calls.map((c) => c.batch)).toEqual([[0, 1], [2, 3]]);
    calls[1]?.done(false); // a failed export is dropped and counted, not retried
    expect(counters.droppedExportFailed).toBe(2);
    expect(counters.failedExports).toBe(1);
    expect(calls[2]?.batch).toEqual([4, 5]);
  });

  it('exports a partial batch after the delay, and a callback called twice counts once', () => {
    vi.useFakeTimers();
    const counters = newCounters();
    const batches: number[][] = [];
    const q = new BatchQueue<number>({ maxSize: 10, batchSize: 5, delayMs: 100 }, (batch, done) => {
      batches.push([...batch]);
      done(true);
      done(true);
    }, counters);
    q.push(1);
    q.push(2);
    vi.advanceTimersByTime(99);
    expect(batches).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(batches).toEqual([[1, 2]]);
    expect(counters.exported).toBe(2);
  });

  it('flush waits for the queue to empty; close drops what is left after the deadline and accepts nothing more', async () => {
    const counters = newCounters();
    let hold: ((ok: boolean) => void) | undefined;
    const q = new BatchQueue<number>({ maxSize: 10, batchSize: 1, delayMs: 1000 }, (_b, done) => {
      hold = done;
    }, counters);
    q.push(1);
    q.push(2);
    const closing = q.close(50);
    await closing;
    expect(counters.droppedExportFailed).toBe(1); // #2 never left
    q.push(3);
    expect(counters.droppedQueueFull).toBe(1);
    hold?.(true);
    expect(counters.exported).toBe(1);
  });

  it('an exporter that throws counts as a failed export', () => {
    const counters = newCounters();
    const q = new BatchQueue<number>({ maxSize: 10, batchSize: 1, delayMs: 10 }, () => {
      throw new Error('boom');
    }, counters);
    q.push(1);
    expect(counters.droppedExportFailed).toBe(1);
  });
});
