import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { OtlpTarget } from '../config/telemetry.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The way out for telemetry: a bounded batch queue per signal and a plain grpc-js unary call per
 * batch to an OTLP/gRPC `Export` method. Nothing here can slow a request: `push` is O(1) and
 * drops (and counts) when the queue is full; one export is in flight per queue; an export that
 * fails or misses its deadline is dropped and counted, never retried in a loop
 * (opentelemetry-js `BatchSpanProcessorBase`, STYLE.md habit 9).
 *
 * Why not the OTel OTLP exporter packages: they read `OTEL_*` themselves (config/ is the sole
 * reader of the environment here), cannot add a fresh bearer token per call on a cleartext
 * channel, and do not report what they drop. The message encoding is the SDK's own
 * (`@opentelemetry/otlp-transformer`). Exporter traffic is never traced: this client has no
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

const identity = (b: Buffer): Buffer => b;

/** One OTLP/gRPC destination. `send` never throws; `done` is called exactly once. */
export interface OtlpChannel {
  send(path: string, body: Uint8Array, done: (err: Error | null) => void): void;
  close(): void;
}

export function createOtlpChannel(target: OtlpTarget, opts: { readonly token?: () => Promise<string>; readonly log: Logger }): OtlpChannel {
  const creds = target.tls
    ? grpc.credentials.createSsl(target.caFile === undefined ? null : readFileSync(target.caFile))
    : grpc.credentials.createInsecure();
  const client = new grpc.Client(target.address, creds, {
    // Telemetry must not build up behind an unreachable collector: fail fast, no transparent retries.
    'grpc.enable_retries': 0,
    'grpc.max_send_message_length': 16 * 1024 * 1024,
    'grpc.initial_reconnect_backoff_ms': 1000,
    'grpc.max_reconnect_backoff_ms': 30_000,
  });
  const base = new grpc.Metadata();
  for (const [k, v] of Object.entries(target.headers)) base.set(k, v);
  let warnedAt = 0;

  function call(path: string, body: Uint8Array, md: grpc.Metadata, done: (err: Error | null) => void): void {
    try {
      client.makeUnaryRequest(
        path,
        identity,
        identity,
        Buffer.from(body.buffer, body.byteOffset, body.byteLength),
        md,
        { deadline: Date.now() + target.timeoutMs },
        (err) => {
          if (err !== null) {
            // One line per minute at most: a collector outage must not flood the log.
            const now = Date.now();
            if (now - warnedAt > 60_000) {
              warnedAt = now;
              opts.log.warn('telemetry export failed (dropping; counted in ward_telemetry_dropped_total)', { target: target.address, code: err.code, details: err.details });
            }
          }
          done(err);
        },
      );
    } catch (err) {
      done(err as Error);
    }
  }

  return {
    send(path, body, done) {
      if (opts.token === undefined) return call(path, body, base, done);
      opts.token().then(
        (t) => {
          const md = base.clone();
          md.set('authorization', `Bearer ${t}`);
          call(path, body, md, done);
        },
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
 * A bounded FIFO that exports in batches: when `batchSize` items wait, or `delayMs` after the
 * first one. At most one export in flight; a full queue drops the newest item.
 */
export class BatchQueue<T> {
  readonly #limits: QueueLimits;
  readonly #exportBatch: (batch: T[], done: (ok: boolean) => void) => void;
  readonly #counters: ExportCounters;
  #items: T[] = [];
  #timer: NodeJS.Timeout | null = null;
  #inFlight = false;
  #closed = false;
  #idle: (() => void)[] = [];

  constructor(limits: QueueLimits, exportBatch: (batch: T[], done: (ok: boolean) => void) => void, counters: ExportCounters) {
    this.#limits = limits;
    this.#exportBatch = exportBatch;
    this.#counters = counters;
  }

  get size(): number {
    return this.#items.length;
  }

  push(item: T): void {
    if (this.#closed || this.#items.length >= this.#limits.maxSize) {
      this.#counters.droppedQueueFull++;
      return;
    }
    this.#items.push(item);
    if (this.#inFlight) return;
    if (this.#items.length >= this.#limits.batchSize) this.#run();
    else if (this.#timer === null) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#run();
      }, this.#limits.delayMs);
      this.#timer.unref();
    }
  }

  #run(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#inFlight) return;
    if (this.#items.length === 0) {
      const waiters = this.#idle.splice(0);
      for (const w of waiters) w();
      return;
    }
    const batch = this.#items.length <= this.#limits.batchSize ? this.#items : this.#items.slice(0, this.#limits.batchSize);
    this.#items = batch === this.#items ? [] : this.#items.slice(batch.length);
    this.#inFlight = true;
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      this.#inFlight = false;
      if (ok) this.#counters.exported += batch.length;
      else {
        this.#counters.failedExports++;
        this.#counters.droppedExportFailed += batch.length;
      }
      // Keep going while a full batch waits (or anyone waits for a flush); otherwise the timer.
      if (this.#items.length >= this.#limits.batchSize || this.#idle.length > 0) this.#run();
      else if (this.#items.length > 0 && this.#timer === null && !this.#closed) {
        this.#timer = setTimeout(() => {
          this.#timer = null;
          this.#run();
        }, this.#limits.delayMs);
        this.#timer.unref();
      }
    };
    try {
      this.#exportBatch(batch, done);
    } catch {
      done(false);
    }
  }

  /** Exports everything queued now; resolves when the queue is empty or after `timeoutMs`. */
  flush(timeoutMs: number): Promise<void> {
    if (this.#items.length === 0 && !this.#inFlight) return Promise.resolve();
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
    this.#counters.droppedExportFailed += this.#items.length;
    this.#items = [];
  }
}
