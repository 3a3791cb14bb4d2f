import { readFileSync } from 'node:fs';
import { rereadCaFile } from '../lib/ca-file.ts';
import type { OtlpTarget } from '../config/telemetry.ts';
import type { Logger } from '../lib/log.ts';
import { GrpcUnaryClient } from '../h2/grpc-unary.ts';
import { PbWriter, varintSize, WIRE_LEN } from '../lib/protobuf.ts';

/**
 * The way out for telemetry: a bounded batch queue per signal and one gRPC unary call per batch
 * to an OTLP/gRPC `Export` method, over ward's own HTTP/2 client (src/h2/grpc-unary.ts; grpc-js
 * is not loaded for telemetry). Nothing here can slow a request: `push` is O(1) and
 * drops (and counts) when the queue is full; one export is in flight per queue; an export that
 * fails or misses its deadline is dropped and counted, never retried in a loop
 * (opentelemetry-js `BatchSpanProcessorBase`, STYLE.md habit 9).
 *
 * Why not the OTel OTLP exporter packages: they read `OTEL_*` themselves (config/ is the sole
 * reader of the environment here), cannot add a fresh bearer token per call on a cleartext
 * channel, and do not report what they drop. Spans and log records are encoded by ward
 * (otlp-encode.ts) straight into `EncodedQueue` batches; metrics by the SDK's
 * `@opentelemetry/otlp-transformer`. Exporter traffic is never traced: this client has no
 * instrumentation and ward registers no global tracer.
 */

export type Signal = 'traces' | 'logs' | 'metrics';

export const EXPORT_PATHS: Readonly<Record<Signal, string>> = Object.freeze({
  traces: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
  logs: '/opentelemetry.proto.collector.logs.v1.LogsService/Export',
  metrics: '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export',
});

/** Live counters, per signal (read them, do not write). */
export interface ExportCounters {
  exported: number;
  /** Dropped because the queue was full. */
  droppedQueueFull: number;
  /** Dropped because the export failed (unreachable, refused, deadline). */
  droppedExportFailed: number;
  /** Export calls that failed. */
  failedExports: number;
}

export function newCounters(): ExportCounters {
  return { exported: 0, droppedQueueFull: 0, droppedExportFailed: 0, failedExports: 0 };
}

/** One OTLP/gRPC destination. `send` never throws; `done` is called exactly once. */
export interface OtlpChannel {
  send(path: string, body: Uint8Array, done: (err: Error | null) => void): void;
  close(): void;
}

export function createOtlpChannel(target: OtlpTarget, opts: { readonly token?: () => Promise<string>; readonly log: Logger }): OtlpChannel {
  const client = new GrpcUnaryClient({
    address: target.address,
    timeoutMs: target.timeoutMs,
    // The CA file read again at each connection (a rotated CA needs no restart).
    ...(target.tls ? { tls: { ca: target.caFile === undefined ? null : rereadCaFile(target.caFile, readFileSync(target.caFile), opts.log) } } : {}),
  });
  const base: string[] = [];
  for (const [k, v] of Object.entries(target.headers)) base.push(k, v);
  let warnedAt = 0;

  function call(path: string, body: Uint8Array, headers: readonly string[], done: (err: Error | null) => void): void {
    client.call(path, headers, Buffer.from(body.buffer, body.byteOffset, body.byteLength), (err) => {
      if (err !== null) {
        // One line per minute at most: a collector outage must not flood the log.
        const now = Date.now();
        if (now - warnedAt > 60_000) {
          warnedAt = now;
          opts.log.warn('telemetry export failed (dropping; counted in ward_telemetry_dropped_total)', { target: target.address, code: err.code, details: err.details });
        }
      }
      done(err);
    });
  }

  return {
    send(path, body, done) {
      if (opts.token === undefined) return call(path, body, base, done);
      opts.token().then(
        (t) => call(path, body, [...base, 'authorization', `Bearer ${t}`], done),
        (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
      );
    },
    close: () => client.close(),
  };
}

export interface QueueLimits {
  readonly maxSize: number;
  readonly batchSize: number;
  readonly delayMs: number;
}

/**
 * The envelope around a batch of encoded items: `Export<Signal>ServiceRequest { 1: Resource<X> {
 * 1: resource, 2: Scope<X> { 1: scope, 2: item, 2: item, ... } } }`. Items are written as field 2
 * of the scope message (`spans` and `log_records` are both field 2).
 */
export interface Envelope {
  /** `Resource` field bytes (tag 1 + length + message), built once. */
  readonly resource: Uint8Array;
  /** `InstrumentationScope` field bytes (tag 1 + length + message), built once. */
  readonly scope: Uint8Array;
}

/** Largest envelope header: three tags with 5-byte lengths, plus the resource and scope. */
function headerRoom(env: Envelope): number {
  return 3 * 6 + env.resource.length + env.scope.length;
}

class Batch {
  readonly w: PbWriter;
  count = 0;
  constructor(room: number) {
    this.w = new PbWriter(64 * 1024);
    this.w.pos = room;
  }
}

/**
 * A bounded queue of items already encoded as protobuf, exported in batches: when `batchSize`
 * items wait, or `delayMs` after the first one. The items of a batch are written one after the
 * other into that batch's reused buffer, with room left in front for the envelope, so a batch
 * costs no object per item and no copy before it is handed to the channel. Exporting is never
 * done inside the call that fills a batch (it is scheduled with `setImmediate`); at most one
 * export is in flight; a full queue drops the newest item and counts it; a failed export is
 * dropped and counted, never retried (opentelemetry-js `BatchSpanProcessorBase`, STYLE.md habit 9).
 *
 * Use: `const w = q.open(); if (w !== null) { const m = w.begin(2); ...; w.end(m); q.commit(); }`.
 */
export class EncodedQueue {
  readonly #limits: QueueLimits;
  readonly #env: Envelope;
  readonly #room: number;
  readonly #send: (body: Buffer, done: (ok: boolean) => void) => void;
  readonly #counters: ExportCounters;
  /** Sealed batches waiting, oldest first; the last element is never the open one. */
  readonly #ready: Batch[] = [];
  #open: Batch | null = null;
  /** Batches whose buffers can be reused (at most two are kept). */
  readonly #free: Batch[] = [];
  #size = 0;
  #timer: NodeJS.Timeout | null = null;
  #scheduled = false;
  #inFlight = false;
  #closed = false;
  #idle: (() => void)[] = [];

  constructor(limits: QueueLimits, env: Envelope, send: (body: Buffer, done: (ok: boolean) => void) => void, counters: ExportCounters) {
    this.#limits = limits;
    this.#env = env;
    this.#room = headerRoom(env);
    this.#send = send;
    this.#counters = counters;
  }

  /** Items queued (not yet handed to an export). */
  get size(): number {
    return this.#size;
  }

  /** The writer for one more item, or null when the queue is full or closed (the drop is counted). */
  open(): PbWriter | null {
    if (this.#closed || this.#size >= this.#limits.maxSize) {
      this.#counters.droppedQueueFull++;
      return null;
    }
    let b = this.#open;
    if (b === null) {
      b = this.#free.pop() ?? new Batch(this.#room);
      b.w.pos = this.#room;
      b.count = 0;
      this.#open = b;
    }
    return b.w;
  }

  /** The item written since `open()` is complete. */
  commit(): void {
    const b = this.#open;
    if (b === null) return;
    b.count++;
    this.#size++;
    if (b.count >= this.#limits.batchSize) {
      this.#seal();
      this.#schedule();
    } else if (this.#timer === null && !this.#inFlight) {
      this.#timer = setTimeout(this.#onTimer, this.#limits.delayMs);
      this.#timer.unref();
    }
  }

  readonly #onTimer = (): void => {
    this.#timer = null;
    this.#seal();
    this.#run();
  };

  #seal(): void {
    const b = this.#open;
    if (b === null || b.count === 0) return;
    this.#open = null;
    this.#ready.push(b);
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#run();
    });
  }

  /** The batch's bytes: the envelope written right-aligned in the room left in front of the items. */
  #body(b: Batch): Buffer {
    const w = b.w;
    const items = w.pos - this.#room;
    const env = this.#env;
    const scopeLen = env.scope.length + items;
    const resLen = env.resource.length + 1 + varintSize(scopeLen) + scopeLen;
    const start = this.#room - (1 + varintSize(resLen) + env.resource.length + 1 + varintSize(scopeLen) + env.scope.length);
    const end = w.pos;
    w.pos = start;
    w.tag(1, WIRE_LEN);
    w.varint(resLen);
    w.raw(env.resource);
    w.tag(2, WIRE_LEN);
    w.varint(scopeLen);
    w.raw(env.scope);
    w.pos = end;
    return w.buf.subarray(start, end);
  }

  #run(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#inFlight) return;
    const b = this.#ready.shift();
    if (b === undefined) {
      const waiters = this.#idle.splice(0);
      for (const w of waiters) w();
      return;
    }
    this.#inFlight = true;
    this.#size -= b.count;
    const n = b.count;
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      this.#inFlight = false;
      if (ok) this.#counters.exported += n;
      else {
        this.#counters.failedExports++;
        this.#counters.droppedExportFailed += n;
      }
      if (this.#free.length < 2) this.#free.push(b);
      // Keep going while a sealed batch waits (or anyone waits for a flush); otherwise the timer.
      if (this.#ready.length > 0 || this.#idle.length > 0) {
        if (this.#idle.length > 0) this.#seal();
        this.#schedule();
      } else if (this.#open !== null && this.#open.count > 0 && this.#timer === null && !this.#closed) {
        this.#timer = setTimeout(this.#onTimer, this.#limits.delayMs);
        this.#timer.unref();
      }
    };
    try {
      this.#send(this.#body(b), done);
    } catch {
      done(false);
    }
  }

  /** Exports everything queued now; resolves when the queue is empty or after `timeoutMs`. */
  flush(timeoutMs: number): Promise<void> {
    this.#seal();
    if (this.#ready.length === 0 && !this.#inFlight) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      t.unref();
      this.#idle.push(() => {
        clearTimeout(t);
        resolve();
      });
      this.#run();
    });
  }

  /** Flushes (bounded by `timeoutMs`), then accepts nothing more. */
  async close(timeoutMs: number): Promise<void> {
    await this.flush(timeoutMs);
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    // Not exported before the deadline: lost like a failed export.
    this.#seal();
    this.#counters.droppedExportFailed += this.#size;
    this.#size = 0;
    this.#ready.length = 0;
  }
}
