import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parseEndpoint } from '../../../config/telemetry.ts';
import { ConfigError } from '../../../errors/ward-error.ts';
import type { Logger } from '../../../lib/log.ts';
import { issueAt, type YamlLocator } from '../../../lib/yaml-locate.ts';
import type { TelemetryReceiverConfig } from './config.ts';

/**
 * Sends every accepted OTLP Export on to another OTLP/gRPC endpoint, byte for byte (the receiver
 * never re-encodes). A bounded byte queue and a fixed number of calls in flight: a slow or dead
 * downstream costs at most `maxQueueBytes` of memory, and what does not fit is dropped and
 * counted. Nothing is retried.
 */

export interface ForwardCounters {
  forwarded: number;
  failed: number;
  dropped: number;
}

export interface Forwarder {
  readonly target: string;
  /** Never blocks, never throws. */
  forward(path: string, body: Buffer): void;
  readonly counters: Readonly<ForwardCounters>;
  /** Waits (bounded) for queued requests, then closes the channel. */
  close(timeoutMs: number): Promise<void>;
}

const identity = (b: Buffer): Buffer => b;

/**
 * `locator`: the control-plane config file's, when `cfg` is its `telemetry.forward`; a bad setting
 * is then reported at its line:column.
 */
export function createForwarder(
  cfg: NonNullable<TelemetryReceiverConfig['forward']>,
  opts: { readonly baseDir: string; readonly locator?: YamlLocator | undefined; readonly log: Logger },
): Forwarder {
  const fail = (field: 'endpoint' | 'caFile', message: string): never => {
    throw new ConfigError([issueAt(opts.locator, '(control-plane config)', ['telemetry', 'forward', field], message)]);
  };
  const ep = parseEndpoint(cfg.endpoint);
  if (ep === null) return fail('endpoint', `expected host:port, http://host:port or https://host:port, got '${cfg.endpoint}'`);
  let creds: grpc.ChannelCredentials;
  if (ep.tls) {
    let ca: Buffer | null = null;
    if (cfg.caFile !== undefined) {
      const path = isAbsolute(cfg.caFile) ? cfg.caFile : resolve(opts.baseDir, cfg.caFile);
      try {
        ca = readFileSync(path);
      } catch (err) {
        // A configuration error at its field, not an ENOENT out of start-up.
        fail('caFile', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    }
    creds = grpc.credentials.createSsl(ca);
  } else creds = grpc.credentials.createInsecure();
  const client = new grpc.Client(ep.address, creds, { 'grpc.enable_retries': 0, 'grpc.max_send_message_length': 64 * 1024 * 1024 });
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(cfg.headers)) md.set(k, v);
  const counters: ForwardCounters = { forwarded: 0, failed: 0, dropped: 0 };
  const queue: { path: string; body: Buffer }[] = [];
  let queuedBytes = 0;
  let inFlight = 0;
  let closed = false;
  let warnedAt = 0;
  const idle: (() => void)[] = [];

  function pump(): void {
    while (inFlight < cfg.concurrency && queue.length > 0) {
      const item = queue.shift() as { path: string; body: Buffer };
      queuedBytes -= item.body.length;
      inFlight++;
      client.makeUnaryRequest(item.path, identity, identity, item.body, md, { deadline: Date.now() + cfg.timeoutMs }, (err) => {
        inFlight--;
        if (err === null) counters.forwarded++;
        else {
          counters.failed++;
          const now = Date.now();
          if (now - warnedAt > 60_000) {
            warnedAt = now;
            opts.log.warn('OTLP forward failed (dropping)', { target: ep?.address, code: err.code, details: err.details });
          }
        }
        pump();
      });
    }
    if (inFlight === 0 && queue.length === 0) for (const f of idle.splice(0)) f();
  }

  return {
    target: ep.address,
    counters,
    forward(path, body) {
      if (closed || queuedBytes + body.length > cfg.maxQueueBytes) {
        counters.dropped++;
        return;
      }
      queue.push({ path, body });
      queuedBytes += body.length;
      pump();
    },
    async close(timeoutMs) {
      closed = true;
      if (inFlight > 0 || queue.length > 0) {
        await new Promise<void>((res) => {
          const t = setTimeout(res, timeoutMs);
          t.unref();
          idle.push(() => {
            clearTimeout(t);
            res();
          });
        });
      }
      counters.dropped += queue.length;
      queue.length = 0;
      client.close();
    },
  };
}
