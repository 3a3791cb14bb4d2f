import type { OutgoingHttpHeaders } from 'node:http';
import {
  type Attributes,
  type Counter,
  type Histogram,
  type Logger as OtelLogger,
  ROOT_CONTEXT,
  SeverityNumber,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { ProtobufLogsSerializer, ProtobufMetricsSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { type LogRecordProcessor, LoggerProvider, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { MeterProvider, MetricReader, PeriodicExportingMetricReader, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { type ReadableSpan, type SpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import type { ResolvedTelemetry } from '../config/telemetry.ts';
import type { CallSpan, CallTracer, DecisionRecord } from '../inbound/types.ts';
import type { OutboundDecisionRecord as EgressRecord } from '../outbound/types.ts';
import type { Logger } from '../lib/log.ts';
import { BatchQueue, createOtlpChannel, EXPORT_PATHS, type ExportCounters, newCounters, type OtlpChannel, type Signal } from './export.ts';
import { createWardSampler } from './sampler.ts';
import * as sc from './semconv.ts';
import { formatTraceparent, remoteContext } from './traceparent.ts';

/**
 * The sidecar's OpenTelemetry: one span, one decision log record and a few metric updates per
 * call, from the stacks' `CallTracer` hook. Providers are per sidecar (nothing global is
 * registered), so several sidecars can share a process (tests) and exporter traffic is never
 * traced. Denials are always sampled (sampler.ts); decision log records are never sampled.
 * Queues are bounded and drop with a count (export.ts).
 */

export type ExchangeOutcome = 'hit' | 'exchanged' | 'client-credentials' | 'refused' | 'unavailable' | 'none';

/** What the outbound stage records per call: the inbound record plus the exchange. */
export interface OutboundDecisionRecord extends DecisionRecord {
  /** The destination's name from the sidecar config. */
  readonly destination: string;
  readonly exchange: ExchangeOutcome;
  /** The IdP's OAuth error code when it refused the exchange (`invalid_target`…). */
  readonly exchangeError: string | null;
}

/** The outbound stage's hooks (its stack calls them like the inbound stack calls `inbound`). */
export interface OutboundTelemetry {
  now(): number;
  begin(record: OutboundDecisionRecord, startedAt: number, rawHeaders: readonly string[], fwd: OutgoingHttpHeaders | null): CallSpan | null;
  /** One token lookup: a cache hit, or an exchange/client-credentials request and its outcome. */
  exchange(outcome: ExchangeOutcome, durationMs: number): void;
  /**
   * The egress stack's `onDecision` hook (src/outbound): a decision log record and metrics per
   * outgoing call, with the exchange outcome; no span (that stack passes `traceparent` through
   * untouched, so the trace continues from the inbound span to the next hop).
   */
  decision(r: EgressRecord): void;
  /**
   * The egress stack's tracer (`OutboundDeps.tracer`): the same record and metrics as
   * `decision`, plus a CLIENT span that continues the app's `traceparent` and is propagated to
   * the destination in `fwd`.
   */
  call(r: EgressRecord, startedAt: number, rawHeaders: readonly string[], fwd: OutgoingHttpHeaders | null): CallSpan | null;
}

/** Read-only views the metrics report (each optional). */
export interface TelemetrySources {
  readonly issuers?: () => readonly { readonly issuer: string; readonly fetchOk: number; readonly fetchFailed: number }[];
  readonly policyVersion?: () => string | null;
  /** null when the sidecar has no control plane. */
  readonly controlPlaneConnected?: () => boolean | null;
}

export interface Telemetry {
  /** Pass as `InboundDeps.tracer`. */
  readonly inbound: CallTracer;
  readonly outbound: OutboundTelemetry;
  /** Prometheus text exposition (format 0.0.4) of every metric. */
  metricsText(): Promise<string>;
  /** Live export counters per signal. */
  counters(): Readonly<Record<Signal, Readonly<ExportCounters>>>;
  /** Exports what is queued (bounded by `timeoutMs`). */
  flush(timeoutMs: number): Promise<void>;
  /** Flushes (bounded), then stops; idempotent. */
  shutdown(timeoutMs: number): Promise<void>;
}

export interface TelemetryOptions {
  /** The service the sidecar guards (`ward.service`). */
  readonly service: string;
  /** `service.instance.id` (e.g. host:pid). */
  readonly instanceId: string;
  readonly log: Logger;
  readonly sources?: TelemetrySources;
  /** Bearer token for exports to the control plane; called per export (it caches). */
  readonly token?: () => Promise<string>;
  /** Time base of spans (ms since the epoch, fractional). Default: performance clock. */
  readonly now?: () => number;
}

const ORIGIN = performance.timeOrigin;
const perfNow = (): number => ORIGIN + performance.now();
/** Longest route kept on a decision log record or span (gRPC method names are short; paths need not be). */
const MAX_ROUTE = 256;
/** gRPC codes that are server errors (OTel RPC semconv: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);

type Decision = 'allow' | 'deny' | 'dry-run-deny';

function decisionOf(r: DecisionRecord): Decision {
  if (r.decision === 'deny') return 'deny';
  return r.dryRunCode === null ? 'allow' : 'dry-run-deny';
}

function cut(s: string): string {
  return s.length <= MAX_ROUTE ? s : s.slice(0, MAX_ROUTE);
}

const EMPTY: readonly string[] = Object.freeze([]);

function egressOutcome(e: EgressRecord): ExchangeOutcome {
  if (e.token === 'exchange') return e.cached ? 'hit' : 'exchanged';
  if (e.token === 'client-credentials') return e.cached ? 'hit' : 'client-credentials';
  if (e.code === 'ERR_EXCHANGE_REFUSED') return 'refused';
  if (e.code === 'ERR_EXCHANGE_UNAVAILABLE') return 'unavailable';
  return 'none';
}

class SpanHandle implements CallSpan {
  readonly #span: Span;
  readonly #server: boolean;
  constructor(span: Span, server: boolean) {
    this.#span = span;
    this.#server = server;
  }
  end(status: number, grpcStatus: number, failed: boolean): void {
    const s = this.#span;
    let error: string | null = failed ? 'reset' : null;
    if (grpcStatus >= 0) {
      s.setAttribute(sc.RPC_GRPC_STATUS_CODE, grpcStatus);
      if (error === null && (this.#server ? GRPC_SERVER_ERRORS.has(grpcStatus) : grpcStatus !== 0)) error = String(grpcStatus);
    } else if (status > 0) {
      s.setAttribute(sc.HTTP_RESPONSE_STATUS_CODE, status);
      if (error === null && (status >= 500 || (!this.#server && status >= 400))) error = String(status);
    }
    if (error !== null) {
      s.setStatus({ code: SpanStatusCode.ERROR });
      s.setAttribute(sc.ERROR_TYPE, error);
    }
    s.end();
  }
}

/** A metric reader collected on demand (the admin `/metrics`). */
class PullReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

export function startTelemetry(cfg: ResolvedTelemetry, opts: TelemetryOptions): Telemetry {
  const log = opts.log.child({ stage: 'telemetry' });
  const now = opts.now ?? perfNow;
  const service = opts.service;
  const counters: Record<Signal, ExportCounters> = { traces: newCounters(), logs: newCounters(), metrics: newCounters() };

  const resource = defaultResource().merge(
    resourceFromAttributes({
      ...cfg.resourceAttributes,
      [sc.SERVICE_NAME]: cfg.serviceName,
      'service.instance.id': opts.instanceId,
      [sc.WARD_SERVICE]: service,
    }),
  );

  // One channel per distinct destination (usually one: the control plane).
  const channels = new Map<string, OtlpChannel>();
  const channelFor = (s: Signal): OtlpChannel | null => {
    const t = cfg[s];
    if (t === null) return null;
    const key = `${t.address}|${t.tls}|${t.caFile ?? ''}|${JSON.stringify(t.headers)}`;
    let ch = channels.get(key);
    if (ch === undefined) {
      ch = createOtlpChannel(t, { log, ...(opts.token === undefined ? {} : { token: opts.token }) });
      channels.set(key, ch);
    }
    return ch;
  };

  // ---- traces
  let tracerProvider: TracerProvider | null = null;
  let tracer: Tracer | null = null;
  let spanQueue: BatchQueue<ReadableSpan> | null = null;
  const traceChannel = channelFor('traces');
  if (traceChannel !== null) {
    const q = new BatchQueue<ReadableSpan>(
      cfg.spanQueue,
      (batch, done) => {
        const body = ProtobufTraceSerializer.serializeRequest(batch);
        if (body === undefined) return done(false);
        traceChannel.send(EXPORT_PATHS.traces, body, (err) => done(err === null));
      },
      counters.traces,
    );
    spanQueue = q;
    const processor: SpanProcessor = {
      onStart: () => {},
      onEnd: (span) => {
        if ((span.spanContext().traceFlags & 1) !== 0) q.push(span);
      },
      forceFlush: () => q.flush(cfg.traces?.timeoutMs ?? 10_000),
      shutdown: () => Promise.resolve(),
    };
    tracerProvider = new TracerProvider({
      resource,
      sampler: createWardSampler(cfg.sampler),
      spanProcessors: [processor],
      spanLimits: { attributeCountLimit: 64, attributeValueLengthLimit: 1024 },
    });
    tracer = tracerProvider.getTracer(sc.SCOPE);
  }

  // ---- decision log records
  let loggerProvider: LoggerProvider | null = null;
  let otelLogger: OtelLogger | null = null;
  let logQueue: BatchQueue<ReadableLogRecord> | null = null;
  const logChannel = channelFor('logs');
  if (logChannel !== null) {
    const q = new BatchQueue<ReadableLogRecord>(
      cfg.logQueue,
      (batch, done) => {
        const body = ProtobufLogsSerializer.serializeRequest(batch);
        if (body === undefined) return done(false);
        logChannel.send(EXPORT_PATHS.logs, body, (err) => done(err === null));
      },
      counters.logs,
    );
    logQueue = q;
    const processor: LogRecordProcessor = {
      onEmit: (record) => q.push(record),
      forceFlush: () => q.flush(cfg.logs?.timeoutMs ?? 10_000),
      shutdown: () => Promise.resolve(),
    };
    loggerProvider = new LoggerProvider({ resource, processors: [processor], logRecordLimits: { attributeCountLimit: 64, attributeValueLengthLimit: 1024 } });
    otelLogger = loggerProvider.getLogger(sc.SCOPE);
  }

  // ---- metrics: pulled by /metrics, pushed over OTLP when a target is set
  const pull = new PullReader();
  const readers: MetricReader[] = [pull];
  const metricChannel = channelFor('metrics');
  if (metricChannel !== null) {
    const exporter: PushMetricExporter = {
      export(rm: ResourceMetrics, cb) {
        const n = rm.scopeMetrics.reduce((a, s) => a + s.metrics.length, 0);
        const body = ProtobufMetricsSerializer.serializeRequest(rm);
        const finish = (ok: boolean): void => {
          if (ok) counters.metrics.exported += n;
          else {
            counters.metrics.failedExports++;
            counters.metrics.droppedExportFailed += n;
          }
          cb({ code: ok ? ExportResultCode.SUCCESS : ExportResultCode.FAILED });
        };
        if (body === undefined) return finish(false);
        metricChannel.send(EXPORT_PATHS.metrics, body, (err) => finish(err === null));
      },
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
    readers.push(
      new PeriodicExportingMetricReader({
        exporter,
        exportIntervalMillis: cfg.metricsIntervalMs,
        exportTimeoutMillis: Math.min(cfg.metrics?.timeoutMs ?? 10_000, cfg.metricsIntervalMs),
      }),
    );
  }
  const meterProvider = new MeterProvider({ resource, readers });
  const meter = meterProvider.getMeter(sc.SCOPE);
  // Decisions are counted in plain numbers per attribute set and observed at collection: a
  // synchronous counter would hash its attributes on every call (the SDK's largest per-call cost).
  const decisionCounts = new Map<string, { readonly attrs: Attributes; n: number }>();
  meter
    .createObservableCounter(sc.M_DECISIONS, { description: 'Authorization decisions, by service, direction, decision and reason code.', unit: '{decision}' })
    .addCallback((r) => {
      for (const c of decisionCounts.values()) r.observe(c.n, c.attrs);
    });
  const authzDuration: Histogram = meter.createHistogram(sc.M_AUTHZ_DURATION, {
    description: 'Time from the call\'s arrival to its decision (normalization, authentication, policy; the token exchange on outbound calls).',
    unit: 's',
    advice: { explicitBucketBoundaries: [...sc.LATENCY_BUCKETS_S] },
  });
  const exchangeDuration: Histogram = meter.createHistogram(sc.M_EXCHANGE_DURATION, {
    description: 'Outbound token lookups: cache hits and token-endpoint requests, by outcome.',
    unit: 's',
    advice: { explicitBucketBoundaries: [...sc.LATENCY_BUCKETS_S] },
  });
  const exchangeCache: Counter = meter.createCounter(sc.M_EXCHANGE_CACHE, {
    description: 'Exchanged-token cache lookups, by result (hit or miss); the hit ratio is hit / (hit + miss).',
    unit: '{lookup}',
  });
  const src = opts.sources ?? {};
  if (src.issuers !== undefined) {
    const issuers = src.issuers;
    meter
      .createObservableCounter(sc.M_JWKS_FETCHES, { description: 'Discovery and JWKS fetches per issuer, by result.', unit: '{fetch}' })
      .addCallback((r) => {
        for (const i of issuers()) {
          r.observe(i.fetchOk, { [sc.WARD_ISSUER]: i.issuer, [sc.WARD_RESULT]: 'ok' });
          r.observe(i.fetchFailed, { [sc.WARD_ISSUER]: i.issuer, [sc.WARD_RESULT]: 'failed' });
        }
      });
  }
  if (src.policyVersion !== undefined) {
    const version = src.policyVersion;
    meter
      .createObservableGauge(sc.M_POLICY_VERSION, { description: 'The policy version in force (value 1, the version as an attribute); absent while none is loaded.' })
      .addCallback((r) => {
        const v = version();
        if (v !== null) r.observe(1, { [sc.WARD_SERVICE]: service, [sc.WARD_POLICY_VERSION]: v });
      });
  }
  if (src.controlPlaneConnected !== undefined) {
    const connected = src.controlPlaneConnected;
    meter
      .createObservableGauge(sc.M_CONTROLPLANE_CONNECTED, { description: '1 while the policy stream to the control plane is open and authorized, else 0.' })
      .addCallback((r) => {
        const c = connected();
        if (c !== null) r.observe(c ? 1 : 0);
      });
  }
  meter
    .createObservableCounter(sc.M_TELEMETRY_DROPPED, { description: 'Spans, decision log records and metric streams dropped by telemetry (queue full or export failed); calls are never affected.', unit: '{item}' })
    .addCallback((r) => {
      for (const s of ['traces', 'logs', 'metrics'] as const) {
        r.observe(counters[s].droppedQueueFull, { [sc.WARD_SIGNAL]: s, reason: 'queue_full' });
        r.observe(counters[s].droppedExportFailed, { [sc.WARD_SIGNAL]: s, reason: 'export_failed' });
      }
    });
  meter
    .createObservableCounter(sc.M_TELEMETRY_EXPORTED, { description: 'Spans, decision log records and metric streams exported over OTLP.', unit: '{item}' })
    .addCallback((r) => {
      for (const s of ['traces', 'logs', 'metrics'] as const) r.observe(counters[s].exported, { [sc.WARD_SIGNAL]: s });
    });

  // Metric attribute sets are few (direction × decision × reason): built once each.
  const attrCache = new Map<string, Attributes>();
  function metricAttrs(direction: string, decision: Decision, reason: string | null): Attributes {
    const key = `${direction}|${decision}|${reason ?? ''}`;
    let a = attrCache.get(key);
    if (a === undefined) {
      a = { [sc.WARD_SERVICE]: service, [sc.WARD_DIRECTION]: direction, [sc.WARD_DECISION]: decision };
      if (reason !== null) a[sc.WARD_REASON] = reason;
      Object.freeze(a);
      attrCache.set(key, a);
    }
    return a;
  }

  function begin(
    direction: 'inbound' | 'outbound',
    r: DecisionRecord,
    out: OutboundDecisionRecord | null,
    startedAt: number,
    raw: readonly string[],
    fwd: OutgoingHttpHeaders | null,
    traced = true,
  ): CallSpan | null {
    const decision = decisionOf(r);
    const reason: string | null = r.code ?? r.dryRunCode;
    const key = `${direction}|${decision}|${reason ?? ''}`;
    const count = decisionCounts.get(key);
    if (count !== undefined) count.n++;
    else decisionCounts.set(key, { attrs: metricAttrs(direction, decision, reason), n: 1 });
    if (startedAt > 0) authzDuration.record(Math.max(0, now() - startedAt) / 1000, metricAttrs(direction, decision, null));
    if (tracer === null && otelLogger === null) return null;

    const attrs: Attributes = {
      [sc.WARD_SERVICE]: service,
      [sc.WARD_DIRECTION]: direction,
      [sc.WARD_DECISION]: decision,
      [sc.WARD_DECISION_ID]: r.decisionId,
    };
    if (reason !== null) attrs[sc.WARD_REASON] = reason;
    if (r.rule !== null) attrs[sc.WARD_RULE] = r.rule;
    if (r.policyVersion !== null) attrs[sc.WARD_POLICY_VERSION] = r.policyVersion;
    if (r.issuer !== null) attrs[sc.WARD_ISSUER] = r.issuer;
    let name: string;
    if (r.protocol === 'grpc' && r.route !== null && r.route.startsWith('/')) {
      // rpc.service / rpc.method from `/pkg.Service/Method` (OTel RPC semconv); span name `pkg.Service/Method`.
      const full = cut(r.route.slice(1));
      const slash = full.indexOf('/');
      attrs[sc.RPC_SYSTEM] = 'grpc';
      if (slash > 0) {
        attrs[sc.RPC_SERVICE] = full.slice(0, slash);
        attrs[sc.RPC_METHOD] = full.slice(slash + 1);
      }
      name = full;
    } else {
      // HTTP: no route template is known, so the span is named by the method alone (HTTP
      // semconv) and the raw path stays off the span.
      attrs[sc.HTTP_REQUEST_METHOD] = r.method;
      name = r.method === '' ? 'HTTP' : r.method;
    }
    if (out !== null) {
      attrs[sc.WARD_DESTINATION] = out.destination;
      attrs[sc.WARD_EXCHANGE_OUTCOME] = out.exchange;
      if (out.exchangeError !== null) attrs[sc.WARD_EXCHANGE_ERROR] = out.exchangeError;
    }
    if (decision === 'deny' && reason !== null) attrs[sc.ERROR_TYPE] = reason;

    const parent = remoteContext(raw);
    let ctx: SpanContext | null = parent;
    let span: Span | null = null;
    if (tracer !== null && traced) {
      span = tracer.startSpan(
        name,
        { kind: direction === 'inbound' ? SpanKind.SERVER : SpanKind.CLIENT, startTime: startedAt > 0 ? startedAt : r.time, attributes: attrs },
        parent === null ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent),
      );
      ctx = span.spanContext();
      // The next hop continues our span; `tracestate` is forwarded as received.
      if (fwd !== null) fwd['traceparent'] = formatTraceparent(ctx);
    }
    if (otelLogger !== null) {
      // The span copied its attributes at start; the log record adds the caller and the route.
      const la = attrs;
      if (r.subject !== null) la[sc.ENDUSER_ID] = r.subject;
      if (r.route !== null) la[sc.WARD_ROUTE] = cut(r.route);
      la[sc.HTTP_REQUEST_METHOD] = r.method;
      otelLogger.emit({
        eventName: sc.DECISION_EVENT,
        timestamp: r.time,
        severityNumber: decision === 'allow' ? SeverityNumber.INFO : SeverityNumber.WARN,
        severityText: decision === 'allow' ? 'INFO' : 'WARN',
        body: `${decision} ${r.route === null ? r.method : cut(r.route)}${reason === null ? '' : ` ${reason}`}${r.rule === null ? '' : ` rule=${r.rule}`}`,
        attributes: la,
        context: ctx === null ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, ctx),
      });
    }
    return span === null ? null : new SpanHandle(span, direction === 'inbound');
  }

  const hitAttrs = Object.freeze({ [sc.WARD_CACHE_RESULT]: 'hit' });
  const missAttrs = Object.freeze({ [sc.WARD_CACHE_RESULT]: 'miss' });
  const outcomeAttrs = new Map<ExchangeOutcome, Attributes>();

  const serializer = new PrometheusSerializer();
  let shut: Promise<void> | undefined;

  log.info('telemetry started', {
    endpoint: cfg.traces?.address ?? cfg.logs?.address ?? cfg.metrics?.address ?? null,
    endpointSource: cfg.endpointSource,
    traces: cfg.traces !== null,
    logs: cfg.logs !== null,
    metrics: cfg.metrics !== null,
    sampleRatio: cfg.sampler.ratio,
  });

  function egress(e: EgressRecord, startedAt: number, raw: readonly string[], fwd: OutgoingHttpHeaders | null, traced: boolean): CallSpan | null {
    const outcome = egressOutcome(e);
    if (e.token === 'exchange' || e.token === 'client-credentials') exchangeCache.add(1, e.cached ? hitAttrs : missAttrs);
    // the latency of the token request this call waited for (none on a cache hit)
    if (e.tokenMs !== null) recordExchangeDuration(outcome, e.tokenMs);
    const r: OutboundDecisionRecord = {
      decisionId: e.decisionId,
      time: e.time,
      service: e.service,
      protocol: e.protocol,
      method: e.method,
      route: e.route,
      decision: e.decision,
      code: e.code,
      rule: null,
      policyVersion: null,
      issuer: null,
      subject: null,
      dryRunCode: null,
      destination: e.destination ?? '',
      exchange: outcome,
      exchangeError: e.oauthError,
    };
    return begin('outbound', r, r, startedAt, raw, fwd, traced);
  }

  function recordExchangeDuration(outcome: ExchangeOutcome, durationMs: number): void {
    let a = outcomeAttrs.get(outcome);
    if (a === undefined) {
      a = Object.freeze({ [sc.WARD_SERVICE]: service, [sc.WARD_EXCHANGE_OUTCOME]: outcome });
      outcomeAttrs.set(outcome, a);
    }
    exchangeDuration.record(Math.max(0, durationMs) / 1000, a);
  }

  return {
    inbound: {
      now,
      begin: (r, startedAt, raw, fwd) => begin('inbound', r, null, startedAt, raw, fwd),
    },
    outbound: {
      now,
      begin: (r, startedAt, raw, fwd) => begin('outbound', r, r, startedAt, raw, fwd),
      exchange(outcome, durationMs) {
        if (outcome === 'none') return;
        exchangeCache.add(1, outcome === 'hit' ? hitAttrs : missAttrs);
        recordExchangeDuration(outcome, durationMs);
      },
      decision(e) {
        egress(e, 0, EMPTY, null, false);
      },
      call(e, startedAt, raw, fwd) {
        return egress(e, startedAt, raw, fwd, true);
      },
    },
    async metricsText() {
      const { resourceMetrics } = await pull.collect();
      return serializer.serialize(resourceMetrics);
    },
    counters: () => counters,
    async flush(timeoutMs) {
      await Promise.all([spanQueue?.flush(timeoutMs), logQueue?.flush(timeoutMs)]);
    },
    shutdown(timeoutMs) {
      shut ??= (async () => {
        await Promise.all([spanQueue?.close(timeoutMs), logQueue?.close(timeoutMs)]);
        const deadline = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
        await Promise.race([
          Promise.allSettled([tracerProvider?.shutdown(), loggerProvider?.shutdown(), meterProvider.shutdown()]).then(() => undefined),
          deadline,
        ]);
        for (const ch of channels.values()) ch.close();
        log.info('telemetry stopped', { traces: counters.traces, logs: counters.logs, metrics: counters.metrics });
      })();
      return shut;
    },
  };
}
