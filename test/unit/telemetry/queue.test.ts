import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EncodedQueue, newCounters } from '../../../src/telemetry/export.ts';
import { attrInt, attrString, buildEnvelope } from '../../../src/telemetry/otlp-encode.ts';

/**
 * The export queue of encoded items: bounded, batched, one export in flight, drops counted,
 * never exporting inside the call that fills a batch. Batches are decoded with the vendored OTLP
 * protos to check the envelope written in front of the items.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));
const def = protoLoader.loadSync(['opentelemetry/proto/collector/logs/v1/logs_service.proto'], { longs: String, defaults: false, includeDirs: [PROTO_ROOT] });
const exportMethod = def['opentelemetry.proto.collector.logs.v1.LogsService'] as unknown as { Export: { requestDeserialize: (b: Buffer) => unknown } };

interface Decoded {
  resourceLogs: { resource: { attributes: { key: string; value: Record<string, unknown> }[] }; scopeLogs: { scope: { name: string }; logRecords: { attributes: { key: string; value: Record<string, unknown> }[] }[] }[] }[];
}
const decode = (b: Buffer): Decoded => exportMethod.Export.requestDeserialize(b) as Decoded;

const env = buildEnvelope({ 'service.name': 'orders', 'telemetry.sdk.language': 'nodejs', 'x.count': 3, 'x.flag': true }, 'ward');

/** One item: a log record with one integer attribute `n`. */
function push(q: EncodedQueue, n: number): void {
  const w = q.open();
  if (w === null) return;
  const m = w.begin(2);
  attrInt(w, 6, 'n', n);
  w.end(m);
  q.commit();
}

/** The `n` of each record in an exported batch. */
function items(body: Buffer): number[] {
  return decode(body).resourceLogs.flatMap((rl) => rl.scopeLogs.flatMap((sl) => sl.logRecords.map((r) => Number(r.attributes[0]?.value['intValue']))));
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('encoded export queue', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('wraps each batch in the resource and scope, decodable by the OTLP protos', async () => {
    const counters = newCounters();
    const bodies: Buffer[] = [];
    const q = new EncodedQueue({ maxSize: 100, batchSize: 3, delayMs: 1000 }, env, (b, done) => {
      bodies.push(Buffer.from(b));
      done(true);
    }, counters);
    for (let i = 0; i < 3; i++) push(q, i);
    await tick();
    expect(bodies).toHaveLength(1);
    const d = decode(bodies[0] as Buffer);
    expect(d.resourceLogs).toHaveLength(1);
    expect(d.resourceLogs[0]?.resource.attributes).toEqual([
      { key: 'service.name', value: { stringValue: 'orders' } },
      { key: 'telemetry.sdk.language', value: { stringValue: 'nodejs' } },
      { key: 'x.count', value: { intValue: '3' } },
      { key: 'x.flag', value: { boolValue: true } },
    ]);
    expect(d.resourceLogs[0]?.scopeLogs[0]?.scope.name).toBe('ward');
    expect(items(bodies[0] as Buffer)).toEqual([0, 1, 2]);
    expect(counters.exported).toBe(3);
  });

  it('drops and counts when full, never exports inside the call, one batch in flight at a time', async () => {
    const counters = newCounters();
    const calls: { items: number[]; done: (ok: boolean) => void }[] = [];
    const q = new EncodedQueue({ maxSize: 5, batchSize: 2, delayMs: 1000 }, env, (b, done) => calls.push({ items: items(b), done }), counters);
    for (let i = 0; i < 10; i++) push(q, i);
    // nothing went out synchronously: the call that filled a batch is not charged for its export
    expect(calls).toHaveLength(0);
    expect(q.size).toBe(5);
    expect(counters.droppedQueueFull).toBe(5);
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[0, 1]]);
    calls[0]?.done(true);
    expect(counters.exported).toBe(2);
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[0, 1], [2, 3]]);
    calls[1]?.done(false); // a failed export is dropped and counted, not retried
    expect(counters.droppedExportFailed).toBe(2);
    expect(counters.failedExports).toBe(1);
    await tick();
    // the fifth item waits for its batch to fill or for the delay
    expect(calls).toHaveLength(2);
    expect(q.size).toBe(1);
  });

  it('exports a partial batch after the delay, and a callback called twice counts once', () => {
    vi.useFakeTimers();
    const counters = newCounters();
    const batches: number[][] = [];
    const q = new EncodedQueue({ maxSize: 10, batchSize: 5, delayMs: 100 }, env, (b, done) => {
      batches.push(items(b));
      done(true);
      done(true);
    }, counters);
    push(q, 1);
    push(q, 2);
    vi.advanceTimersByTime(99);
    expect(batches).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(batches).toEqual([[1, 2]]);
    expect(counters.exported).toBe(2);
  });

  it('reuses batch buffers: later batches are intact after earlier ones were exported', async () => {
    const got: number[][] = [];
    const q = new EncodedQueue({ maxSize: 1000, batchSize: 50, delayMs: 1000 }, env, (b, done) => {
      got.push(items(b));
      setImmediate(() => done(true));
    }, newCounters());
    for (let i = 0; i < 500; i++) {
      push(q, i);
      if (i % 7 === 0) await tick();
    }
    await q.flush(2000);
    expect(got.flat()).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('flush waits for the queue to empty; close drops what is left after the deadline and accepts nothing more', async () => {
    const counters = newCounters();
    let hold: ((ok: boolean) => void) | undefined;
    const q = new EncodedQueue({ maxSize: 10, batchSize: 1, delayMs: 1000 }, env, (_b, done) => {
      hold = done;
    }, counters);
    push(q, 1);
    push(q, 2);
    await q.close(50);
    expect(counters.droppedExportFailed).toBe(1); // #2 never left
    push(q, 3);
    expect(counters.droppedQueueFull).toBe(1);
    hold?.(true);
    expect(counters.exported).toBe(1);
  });

  it('an exporter that throws counts as a failed export', async () => {
    const counters = newCounters();
    const q = new EncodedQueue({ maxSize: 10, batchSize: 1, delayMs: 10 }, env, () => {
      throw new Error('boom');
    }, counters);
    push(q, 1);
    await tick();
    expect(counters.droppedExportFailed).toBe(1);
  });

  it('long and non-ASCII values round-trip (length prefixes wider than one byte)', async () => {
    const bodies: Buffer[] = [];
    const q = new EncodedQueue({ maxSize: 10, batchSize: 1, delayMs: 10 }, env, (b, done) => {
      bodies.push(Buffer.from(b));
      done(true);
    }, newCounters());
    const long = 'x'.repeat(300);
    const w = q.open();
    if (w === null) throw new Error('queue full');
    const m = w.begin(2);
    attrString(w, 6, 'long', long);
    attrString(w, 6, 'utf8', 'Zoë — 東京 🚀');
    attrString(w, 6, 'huge', 'y'.repeat(5000));
    attrInt(w, 6, 'neg', -42);
    w.end(m);
    q.commit();
    await tick();
    const rec = decode(bodies[0] as Buffer).resourceLogs[0]?.scopeLogs[0]?.logRecords[0];
    expect(rec?.attributes).toEqual([
      { key: 'long', value: { stringValue: long } },
      { key: 'utf8', value: { stringValue: 'Zoë — 東京 🚀' } },
      { key: 'huge', value: { stringValue: 'y'.repeat(1024) } }, // cut to the attribute length limit
      { key: 'neg', value: { intValue: '-42' } },
    ]);
  });
});
