import type { OutgoingHttpHeaders } from 'node:http';
import type { ResolvedTelemetry } from '../config/telemetry.ts';
import type { CallSpan, CallTracer, DecisionRecord } from '../inbound/types.ts';
import type { OutboundDecisionRecord as EgressRecord } from '../outbound/types.ts';
import type { Logger } from '../lib/log.ts';
import { serializePrometheus } from './prometheus.ts';
import { createOtlpChannel, EncodedQueue, EXPORT_PATHS, type ExportCounters, newCounters, type OtlpChannel, type Signal } from './export.ts';
import { attrInt, attrString, beginLog, KeyValueCache, beginSpan, buildEnvelope, endLog, endSpan, KIND_CLIENT, KIND_SERVER, newSpanId, newTraceId, type SpanHead } from './otlp-encode.ts';
import type { PbWriter } from '../lib/protobuf.ts';
import { createWardSampler } from './sampler.ts';
import type { Attributes } from './metric-data.ts';
import { MetricRegistry } from './metrics.ts';
import type { CallHistogram } from './histogram.ts';
import { encodeMetricsRequest } from './otlp-metrics.ts';
import { registerRuntimeMetrics } from './runtime.ts';
import * as sc from './semconv.ts';
import { formatTraceparent, remoteContext } from './traceparent.ts';

/**
 * The sidecar's OpenTelemetry: one span, one decision log record and a few metric updates per
 * call, from the stacks' `CallTracer` hook. Providers are per sidecar (nothing global is
 * registered), so several sidecars can share a process (tests) and exporter traffic is never
 * traced. Denials are always sampled (sampler.ts); decision log records are never sampled.
 * Queues are bounded and drop with a count (export.ts). During the call only its trace context is
 * made (the next hop needs it); the record, the span and the metrics are written after the turn's
 * calls went on (`Deferred`), or before a flush or a collection.
 */

export type ExchangeOutcome = 'hit' | 'exchanged' | 'client-credentials' | 'refused' | 'unavailable' | 'none';

/** What the outbound stage records per call: the inbound record plus the exchange. */
export interface OutboundDecisionRecord extends DecisionRecord {
  /** The destination's name from the sidecar config. */
  readonly destination: string;
  readonly exchange: ExchangeOutcome;
  /** The IdP's OAuth error code when it refused the exchange (`invalid_target`...). */
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
  /** Calls at the app now, and those refused at `upstream.maxRequests` (null until the listeners are up). */
  readonly upstreamRequests?: () => { readonly active: number; readonly overflowed: number } | null;
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
  /**
   * The sidecar's control-plane bearer token; called per export (it caches). Sent only on the
   * signals whose target is the control plane (`OtlpTarget.source`), never to another collector.
   */
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
/** OTLP `SeverityNumber`s of decision records. */
const SEVERITY_INFO = 9;
const SEVERITY_WARN = 13;

type Decision = 'allow' | 'deny' | 'dry-run-deny';

function decisionOf(r: DecisionRecord): Decision {
  if (r.decision === 'deny') return 'deny';
  return r.dryRunCode === null ? 'allow' : 'dry-run-deny';
}

function cut(s: string): string {
  return s.length <= MAX_ROUTE ? s : s.slice(0, MAX_ROUTE);
}

const EMPTY: readonly string[] = Object.freeze([]);
/** Slots of the deferred-work list kept between turns; a burst's extra slots are let go. */
const MAX_KEPT_SLOTS = 1024;

function egressOutcome(e: EgressRecord): ExchangeOutcome {
  if (e.token === 'exchange') return e.cached ? 'hit' : 'exchanged';
  if (e.token === 'client-credentials') return e.cached ? 'hit' : 'client-credentials';
  if (e.code === 'ERR_EXCHANGE_REFUSED') return 'refused';
  if (e.code === 'ERR_EXCHANGE_UNAVAILABLE') return 'unavailable';
  return 'none';
}

/**
 * Telemetry work a call leaves to be done after it has moved on (`later`): its decision log record
 * and metrics, its span once it ended. `write` encodes it into its export batch.
 */
interface Deferred {
  write(): void;
}

/**
 * An open span (sampled). Its end time and outcome are taken when the call ends; the span is
 * encoded into its batch later, with the other deferred work of that event-loop turn.
 */
class SpanHandle implements CallSpan, Deferred {
  readonly #head: SpanHead;
  readonly #out: SpanOut;
  readonly #record: DecisionRecord;
  readonly #egress: OutboundDecisionRecord | null;
  readonly #decision: Decision;
  readonly #reason: string | null;
  readonly #rpc: string | null;
  #endMs = -1;
  #status = 0;
  #grpcStatus = -1;
  #failed = false;

  constructor(out: SpanOut, head: SpanHead, r: DecisionRecord, egress: OutboundDecisionRecord | null, decision: Decision, reason: string | null, rpc: string | null) {
    this.#head = head;
    this.#out = out;
    this.#record = r;
    this.#egress = egress;
    this.#decision = decision;
    this.#reason = reason;
    this.#rpc = rpc;
  }

  end(status: number, grpcStatus: number, failed: boolean): void {
    if (this.#endMs >= 0) return;
    this.#endMs = this.#out.now();
    this.#status = status;
    this.#grpcStatus = grpcStatus;
    this.#failed = failed;
    this.#out.later(this);
  }

  write(): void {
    const out = this.#out;
    const w = out.queue.open();
    if (w === null) return;
    const head = this.#head;
    const server = head.kind === KIND_SERVER;
    const status = this.#status;
    const grpcStatus = this.#grpcStatus;
    let error: string | null = this.#failed ? 'reset' : null;
    if (grpcStatus >= 0) {
      if (error === null && (server ? GRPC_SERVER_ERRORS.has(grpcStatus) : grpcStatus !== 0)) error = String(grpcStatus);
    } else if (status > 0) {
      if (error === null && (status >= 500 || (!server && status >= 400))) error = String(status);
    }
    const m = beginSpan(w, head, this.#endMs);
    writeCallAttributes(w, 9, out.service, server ? 'inbound' : 'outbound', this.#record, this.#rpc, this.#egress, this.#decision, this.#reason, error);
    if (grpcStatus >= 0) attrInt(w, 9, sc.RPC_GRPC_STATUS_CODE, grpcStatus);
    else if (status > 0) attrInt(w, 9, sc.HTTP_RESPONSE_STATUS_CODE, status);
    endSpan(w, m, error !== null, head.parentSpanId !== null);
    out.queue.commit();
  }
}

/** Decisions counted per attribute set (observed at collection), with the set of their latency series. */
interface DecisionCount {
  readonly direction: 'inbound' | 'outbound';
  readonly decision: Decision;
  readonly reason: string | null;
  readonly attrs: Attributes;
  readonly latencyAttrs: Attributes;
  n: number;
}

/** Where a decision's record and metrics go. */
interface DecisionOut {
  readonly logQueue: EncodedQueue | null;
  readonly service: string;
  readonly authz: CallHistogram;
  count(direction: 'inbound' | 'outbound', decision: Decision, reason: string | null): DecisionCount;
}

/**
 * A decision's metrics (the count, the authorization latency `authzS` in seconds, or -1) and its
 * decision log record, in the trace and span given (null when none), written later (`Deferred`);
 * `observedMs` is when it was decided.
 */
class DecisionLater implements Deferred {
  readonly out: DecisionOut;
  readonly direction: 'inbound' | 'outbound';
  readonly r: DecisionRecord;
  readonly egress: OutboundDecisionRecord | null;
  readonly decision: Decision;
  readonly reason: string | null;
  readonly authzS: number;
  readonly observedMs: number;
  readonly traceId: string | null;
  readonly spanId: string | null;
  readonly flags: number;

  constructor(
    out: DecisionOut,
    direction: 'inbound' | 'outbound',
    r: DecisionRecord,
    egress: OutboundDecisionRecord | null,
    decision: Decision,
    reason: string | null,
    authzS: number,
    observedMs: number,
    traceId: string | null,
    spanId: string | null,
    flags: number,
  ) {
    this.out = out;
    this.direction = direction;
    this.r = r;
    this.egress = egress;
    this.decision = decision;
    this.reason = reason;
    this.authzS = authzS;
    this.observedMs = observedMs;
    this.traceId = traceId;
    this.spanId = spanId;
    this.flags = flags;
  }

  write(): void {
    const o = this.out;
    const r = this.r;
    const decision = this.decision;
    const reason = this.reason;
    const count = o.count(this.direction, decision, reason);
    count.n++;
    if (this.authzS >= 0) o.authz.record(this.authzS, count.latencyAttrs);
    const q = o.logQueue;
    if (q === null) return;
    const w = q.open();
    if (w === null) return;
    const rpc = rpcNameOf(r);
    const route = r.route === null ? null : cut(r.route);
    const m = beginLog(
      w,
      r.time,
      this.observedMs,
      decision === 'allow' ? SEVERITY_INFO : SEVERITY_WARN,
      decision === 'allow' ? 'INFO' : 'WARN',
      `${decision} ${route ?? knownMethod(r.method)}${reason === null ? '' : ` ${reason}`}${r.rule === null ? '' : ` rule=${r.rule}`}${r.dryRunRule === null ? '' : ` dry-run-rule=${r.dryRunRule}`}`,
      sc.DECISION_EVENT,
      this.traceId,
      this.spanId,
      this.flags,
    );
    writeCallAttributes(w, 6, o.service, this.direction, r, rpc, this.egress, decision, reason, null);
    if (r.subject !== null) attrString(w, 6, sc.ENDUSER_ID, r.subject);
    if (route !== null) attrString(w, 6, sc.WARD_ROUTE, route);
    if (rpc !== null) kv.httpMethod.write(w, 6, r.method);
    endLog(w, m);
    q.commit();
  }
}

interface SpanOut {
  readonly queue: EncodedQueue;
  readonly service: string;
  readonly now: () => number;
  readonly later: (d: Deferred) => void;
}

/** Attributes whose values repeat from call to call, encoded once per value. */
const kv = {
  service: new KeyValueCache(sc.WARD_SERVICE),
  direction: new KeyValueCache(sc.WARD_DIRECTION),
  decision: new KeyValueCache(sc.WARD_DECISION),
  reason: new KeyValueCache(sc.WARD_REASON),
  rule: new KeyValueCache(sc.WARD_RULE),
  dryRunRule: new KeyValueCache(sc.WARD_DRY_RUN_RULE),
  policyVersion: new KeyValueCache(sc.WARD_POLICY_VERSION),
  issuer: new KeyValueCache(sc.WARD_ISSUER),
  rpcSystem: new KeyValueCache(sc.RPC_SYSTEM),
  rpcService: new KeyValueCache(sc.RPC_SERVICE),
  rpcMethod: new KeyValueCache(sc.RPC_METHOD),
  httpMethod: new KeyValueCache(sc.HTTP_REQUEST_METHOD),
  destination: new KeyValueCache(sc.WARD_DESTINATION),
  exchangeOutcome: new KeyValueCache(sc.WARD_EXCHANGE_OUTCOME),
  errorType: new KeyValueCache(sc.ERROR_TYPE),
};

/**
 * The attributes a call's span and decision log record share: ward's decision fields, the RPC or
 * HTTP method, the outbound destination and exchange. `error.type` is a denial's reason code,
 * else the failure of an allowed call (a status code or `reset`). A denial answered with a 5xx or a
 * server-error gRPC status (`ERR_POLICY_UNAVAILABLE`, `ERR_KEYS_UNAVAILABLE`, every outbound
 * refusal) is still named by its reason: the status says less, and the docs promise the reason
 * (found in review: it held the status).
 */
function writeCallAttributes(
  w: PbWriter,
  field: number,
  service: string,
  direction: 'inbound' | 'outbound',
  r: DecisionRecord,
  rpc: string | null,
  out: OutboundDecisionRecord | null,
  decision: Decision,
  reason: string | null,
  error: string | null,
): void {
  kv.service.write(w, field, service);
  kv.direction.write(w, field, direction);
  kv.decision.write(w, field, decision);
  attrString(w, field, sc.WARD_DECISION_ID, r.decisionId);
  if (reason !== null) kv.reason.write(w, field, reason);
  if (r.rule !== null) kv.rule.write(w, field, r.rule);
  if (r.dryRunRule !== null) kv.dryRunRule.write(w, field, r.dryRunRule);
  if (r.policyVersion !== null) kv.policyVersion.write(w, field, r.policyVersion);
  if (r.issuer !== null) kv.issuer.write(w, field, r.issuer);
  if (rpc !== null) {
    // rpc.service / rpc.method from `pkg.Service/Method` (OTel RPC semconv)
    const slash = rpc.indexOf('/');
    kv.rpcSystem.write(w, field, 'grpc');
    if (slash > 0) {
      kv.rpcService.write(w, field, rpc.slice(0, slash));
      kv.rpcMethod.write(w, field, rpc.slice(slash + 1));
    }
  } else {
    const m = knownMethod(r.method);
    kv.httpMethod.write(w, field, m);
    // No method at all: a request the HTTP/1.1 parser refused (inbound/server.ts `refuseUnparsed`).
    if (m !== r.method && r.method !== '') attrString(w, field, sc.HTTP_REQUEST_METHOD_ORIGINAL, cut(r.method));
  }
  if (out !== null) {
    kv.destination.write(w, field, out.destination);
    kv.exchangeOutcome.write(w, field, out.exchange);
    if (out.exchangeError !== null) attrString(w, field, sc.WARD_EXCHANGE_ERROR, out.exchangeError);
  }
  if (decision === 'deny' && reason !== null) kv.errorType.write(w, field, reason);
  else if (error !== null) kv.errorType.write(w, field, error);
}

/** OTel HTTP semconv: the methods it knows; any other is reported as `_OTHER`. */
const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

/**
 * `http.request.method` as the semantic conventions want it: a known method, else `_OTHER` (the
 * original in `http.request.method_original`, cut). The caller chooses the method: unmapped, a
 * refused request with a 6 000-character one named its span that (found in review).
 */
function knownMethod(m: string): string {
  return KNOWN_METHODS.has(m) ? m : '_OTHER';
}

/**
 * A gRPC method name in form: `/` service (`pkg.Service`) `/` method, protobuf identifiers only.
 * Only such a route names a span or fills `rpc.*`: a call with a gRPC content-type may carry any
 * path (`/api/users/alice@example.com/reset`), and paths never appear on spans (found in review:
 * one named its span).
 */
const GRPC_METHOD = /^\/[A-Za-z_][A-Za-z0-9_.]*\/[A-Za-z_][A-Za-z0-9_]*$/;

/** `pkg.Service/Method` of a gRPC call that named a method in form (cut), else null. */
function rpcNameOf(r: DecisionRecord): string | null {
  if (r.protocol !== 'grpc' || r.route === null || !GRPC_METHOD.test(r.route)) return null;
  return cut(r.route.slice(1));
}

/** The span name: `pkg.Service/Method` for gRPC; else the HTTP method alone (no route template is known, and the raw path stays off the span); `HTTP` for one not known. */
function spanName(r: DecisionRecord, rpc: string | null): string {
  if (rpc !== null) return rpc;
  const m = knownMethod(r.method);
  return m === '_OTHER' ? 'HTTP' : m;
}

export function startTelemetry(cfg: ResolvedTelemetry, opts: TelemetryOptions): Telemetry {
  const log = opts.log.child({ stage: 'telemetry' });
  const now = opts.now ?? perfNow;
  const service = opts.service;
  const counters: Record<Signal, ExportCounters> = { traces: newCounters(), logs: newCounters(), metrics: newCounters() };

  // The resource of every signal. `telemetry.sdk.*` name what encodes them: ward itself
  // (otlp-encode.ts, otlp-metrics.ts), not the OTel JS SDK.
  const resourceAttributes: Record<string, unknown> = {
    [sc.SERVICE_NAME]: cfg.serviceName, // first, where the SDK's default resource put it
    [sc.TELEMETRY_SDK_LANGUAGE]: 'nodejs',
    [sc.TELEMETRY_SDK_NAME]: 'ward',
    [sc.TELEMETRY_SDK_VERSION]: sc.WARD_VERSION,
    ...cfg.resourceAttributes,
  };
  resourceAttributes[sc.SERVICE_NAME] = cfg.serviceName;
  resourceAttributes['service.instance.id'] = opts.instanceId;
  resourceAttributes[sc.WARD_SERVICE] = service;
  const resource = { attributes: Object.freeze(resourceAttributes) };


  // One channel per distinct destination (usually one: the control plane). The control-plane
  // token goes only to a signal whose target is the control plane by default: a collector named
  // in the config or an `OTEL_*` variable is someone else, and must never see it (found in review:
  // with only the traces endpoint set, it did).
  const channels = new Map<string, OtlpChannel>();
  const channelFor = (s: Signal): OtlpChannel | null => {
    const t = cfg[s];
    if (t === null) return null;
    const token = t.source === 'control-plane' ? opts.token : undefined;
    const key = `${t.address}|${t.tls}|${t.caFile ?? ''}|${JSON.stringify(t.headers)}|${token !== undefined}`;
    let ch = channels.get(key);
    if (ch === undefined) {
      ch = createOtlpChannel(t, { log, ...(token === undefined ? {} : { token }) });
      channels.set(key, ch);
    }
    return ch;
  };

  // ---- work left for after the call (`Deferred`): written at the end of the event-loop turn
  // (`setImmediate`, after every read of the turn was handled and its writes sent), or before a
  // flush or a metrics collection. Encoding a decision log record and a span, and counting, took
  // a call's CPU time before the call's request went on to the app, or before the next call read
  // in the same turn was handled.
  const pending: (Deferred | null)[] = [];
  let pendingCount = 0;
  const later = (d: Deferred): void => {
    if (pendingCount === pending.length) pending.push(d);
    else pending[pendingCount] = d;
    if (++pendingCount === 1) setImmediate(drain);
  };
  function drain(): void {
    const n = pendingCount;
    for (let i = 0; i < n; i++) {
      const d = pending[i] as Deferred;
      pending[i] = null;
      try {
        d.write();
      } catch (err) {
        log.warn('telemetry record not written', { err });
      }
    }
    pendingCount = 0;
    // A burst's slots are not kept.
    if (pending.length > MAX_KEPT_SLOTS) pending.length = MAX_KEPT_SLOTS;
  }

  // ---- spans and decision log records: encoded straight into their export batches
  const envelope = buildEnvelope(resource.attributes, sc.SCOPE);
  const sampler = createWardSampler(cfg.sampler);
  let spanOut: SpanOut | null = null;
  const traceChannel = channelFor('traces');
  if (traceChannel !== null) {
    const queue = new EncodedQueue(cfg.spanQueue, envelope, (body, done) => traceChannel.send(EXPORT_PATHS.traces, body, (err) => done(err === null)), counters.traces);
    spanOut = { queue, service, now, later };
  }
  let logQueue: EncodedQueue | null = null;
  const logChannel = channelFor('logs');
  if (logChannel !== null) {
    logQueue = new EncodedQueue(cfg.logQueue, envelope, (body, done) => logChannel.send(EXPORT_PATHS.logs, body, (err) => done(err === null)), counters.logs);
  }
  const spanQueue = spanOut?.queue ?? null;

  // ---- metrics: pulled by /metrics, pushed over OTLP when a target is set
  const registry = new MetricRegistry(resource, { name: sc.SCOPE }, (name, err) => log.warn('metric callback failed', { metric: name, error: err instanceof Error ? err.message : String(err) }));
  // The authorization latency is recorded on every call: one series per cached attribute object (histogram.ts).
  const authzDuration = registry.histogram({
    name: sc.M_AUTHZ_DURATION,
    description: 'Time from the call\'s arrival to its decision (normalization, authentication, policy; the token exchange on outbound calls).',
    unit: 's',
    boundaries: sc.LATENCY_BUCKETS_S,
  });
  const metricChannel = channelFor('metrics');
  const push = metricChannel === null ? null : startMetricPush(registry, metricChannel, cfg.metricsIntervalMs, counters.metrics, drain);
  // Decisions are counted in plain numbers per attribute set and observed at collection: a
  // synchronous counter would hash its attributes on every call (the SDK's largest per-call cost).
  // Each entry also holds the attribute set of its latency series (the same without the reason),
  // so a call costs one lookup for both metrics.
  const decisionCounts = new Map<string, DecisionCount>();
  registry.observableCounter({ name: sc.M_DECISIONS, description: 'Authorization decisions, by service, direction, decision and reason code.', unit: '{decision}' }, (observe) => {
    for (const c of decisionCounts.values()) observe(c.n, c.attrs);
  });
  // The last attribute set counted answers the next call without building its key (most calls
  // in a row are alike).
  let lastCount: DecisionCount | null = null;
  const decisionOut: DecisionOut = {
    logQueue,
    service,
    authz: authzDuration,
    count(direction, decision, reason) {
      const c = lastCount;
      if (c !== null && c.direction === direction && c.decision === decision && c.reason === reason) return c;
      const key = `${direction}|${decision}|${reason ?? ''}`;
      let count = decisionCounts.get(key);
      if (count === undefined) {
        count = { direction, decision, reason, attrs: metricAttrs(direction, decision, reason), latencyAttrs: metricAttrs(direction, decision, null), n: 0 };
        decisionCounts.set(key, count);
      }
      lastCount = count;
      return count;
    },
  };
  const exchangeDuration = registry.histogram({
    name: sc.M_EXCHANGE_DURATION,
    description: 'Outbound token lookups: cache hits and token-endpoint requests, by outcome.',
    unit: 's',
    boundaries: sc.LATENCY_BUCKETS_S,
  });
  const exchangeCache = registry.counter({
    name: sc.M_EXCHANGE_CACHE,
    description: 'Exchanged-token cache lookups, by result (hit or miss); the hit ratio is hit / (hit + miss).',
    unit: '{lookup}',
  });
  const src = opts.sources ?? {};
  if (src.issuers !== undefined) {
    const issuers = src.issuers;
    registry.observableCounter({ name: sc.M_JWKS_FETCHES, description: 'Discovery and JWKS fetches per issuer, by result.', unit: '{fetch}' }, (observe) => {
      for (const i of issuers()) {
        observe(i.fetchOk, { [sc.WARD_ISSUER]: i.issuer, [sc.WARD_RESULT]: 'ok' });
        observe(i.fetchFailed, { [sc.WARD_ISSUER]: i.issuer, [sc.WARD_RESULT]: 'failed' });
      }
    });
  }
  if (src.policyVersion !== undefined) {
    const version = src.policyVersion;
    registry.observableGauge({ name: sc.M_POLICY_VERSION, description: 'The policy version in force (value 1, the version as an attribute); absent while none is loaded.' }, (observe) => {
      const v = version();
      if (v !== null) observe(1, { [sc.WARD_SERVICE]: service, [sc.WARD_POLICY_VERSION]: v });
    });
  }
  if (src.controlPlaneConnected !== undefined) {
    const connected = src.controlPlaneConnected;
    registry.observableGauge({ name: sc.M_CONTROLPLANE_CONNECTED, description: '1 while the policy stream to the control plane is open and authorized, else 0.' }, (observe) => {
      const c = connected();
      if (c !== null) observe(c ? 1 : 0);
    });
  }
  if (src.upstreamRequests !== undefined) {
    const requests = src.upstreamRequests;
    const attrs: Attributes = { [sc.WARD_SERVICE]: service };
    registry.observableGauge({ name: sc.M_UPSTREAM_REQUESTS, description: 'Allowed calls sent to the app and not yet over (what upstream.maxRequests limits).', unit: '{request}' }, (observe) => {
      const r = requests();
      if (r !== null) observe(r.active, attrs);
    });
    registry.observableCounter({ name: sc.M_UPSTREAM_OVERFLOW, description: 'Allowed calls refused without reaching the app because upstream.maxRequests calls were already there (ERR_UPSTREAM_OVERLOADED).', unit: '{request}' }, (observe) => {
      const r = requests();
      if (r !== null) observe(r.overflowed, attrs);
    });
  }
  registry.observableCounter(
    { name: sc.M_TELEMETRY_DROPPED, description: 'Spans, decision log records and metric streams dropped by telemetry (queue full or export failed); calls are never affected.', unit: '{item}' },
    (observe) => {
      for (const s of ['traces', 'logs', 'metrics'] as const) {
        observe(counters[s].droppedQueueFull, { [sc.WARD_SIGNAL]: s, reason: 'queue_full' });
        observe(counters[s].droppedExportFailed, { [sc.WARD_SIGNAL]: s, reason: 'export_failed' });
      }
    },
  );
  registry.observableCounter({ name: sc.M_TELEMETRY_EXPORTED, description: 'Spans, decision log records and metric streams exported over OTLP.', unit: '{item}' }, (observe) => {
    for (const s of ['traces', 'logs', 'metrics'] as const) observe(counters[s].exported, { [sc.WARD_SIGNAL]: s });
  });
  registerRuntimeMetrics(registry);

  // Metric attribute sets are few (direction × decision × reason): built once each.
  const attrCache = new Map<string, Attributes>();
  function metricAttrs(direction: string, decision: Decision, reason: string | null): Attributes {
    const key = `${direction}|${decision}|${reason ?? ''}`;
    let a = attrCache.get(key);
    if (a === undefined) {
      const m: Record<string, string> = { [sc.WARD_SERVICE]: service, [sc.WARD_DIRECTION]: direction, [sc.WARD_DECISION]: decision };
      if (reason !== null) m[sc.WARD_REASON] = reason;
      a = Object.freeze(m);
      attrCache.set(key, a);
    }
    return a;
  }

  /**
   * A decision: its trace context now (the ids go to the next hop in `fwd`), everything else
   * later (`DecisionLater`, `Deferred`).
   */
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
    const at = now();
    const authzS = startedAt > 0 ? Math.max(0, at - startedAt) / 1000 : -1;
    if (spanOut === null && logQueue === null) {
      later(new DecisionLater(decisionOut, direction, r, out, decision, reason, authzS, at, null, null, 0));
      return null;
    }

    const parent = remoteContext(raw);
    let traceId: string | null = parent === null ? null : parent.traceId;
    let spanId: string | null = parent === null ? null : parent.spanId;
    let flags = parent === null ? 0 : parent.traceFlags;
    let span: SpanHandle | null = null;
    if (spanOut !== null && traced) {
      // Our span: in the caller's trace, or a new one. An unsampled span is not recorded, but
      // its ids still go to the next hop (with the sampled flag off), like the SDK's
      // non-recording span.
      const tid = traceId ?? newTraceId();
      const sid = newSpanId();
      const sampled = sampler(decision, parent, tid);
      if (sampled) {
        const rpc = rpcNameOf(r);
        span = new SpanHandle(
          spanOut,
          {
            traceId: tid,
            spanId: sid,
            parentSpanId: parent === null ? null : parent.spanId,
            traceState: parent === null ? null : parent.traceState,
            name: spanName(r, rpc),
            kind: direction === 'inbound' ? KIND_SERVER : KIND_CLIENT,
            startMs: startedAt > 0 ? startedAt : r.time,
          },
          r,
          out,
          decision,
          reason,
          rpc,
        );
      }
      traceId = tid;
      spanId = sid;
      flags = sampled ? 1 : 0;
      // The next hop continues our span; `tracestate` is forwarded as received, unless the
      // caller's `traceparent` was unusable: the state belongs to a trace this one does not
      // continue (W3C Trace Context §3.3: not parsed without a valid `traceparent`).
      if (fwd !== null) {
        fwd['traceparent'] = formatTraceparent(tid, sid, sampled);
        if (parent === null && fwd['tracestate'] !== undefined) delete fwd['tracestate'];
      }
    }
    later(new DecisionLater(decisionOut, direction, r, out, decision, reason, authzS, at, traceId, spanId, flags));
    return span;
  }

  const hitAttrs = Object.freeze({ [sc.WARD_CACHE_RESULT]: 'hit' });
  const missAttrs = Object.freeze({ [sc.WARD_CACHE_RESULT]: 'miss' });
  const outcomeAttrs = new Map<ExchangeOutcome, Attributes>();

  let shut: Promise<void> | undefined;

  log.info('telemetry started', {
    traces: cfg.traces === null ? null : `${cfg.traces.address} (${cfg.traces.source})`,
    logs: cfg.logs === null ? null : `${cfg.logs.address} (${cfg.logs.source})`,
    metrics: cfg.metrics === null ? null : `${cfg.metrics.address} (${cfg.metrics.source})`,
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
      dryRunRule: null,
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
    metricsText() {
      drain();
      return Promise.resolve(serializePrometheus(registry.collect()));
    },
    counters: () => counters,
    async flush(timeoutMs) {
      drain();
      await Promise.all([spanQueue?.flush(timeoutMs), logQueue?.flush(timeoutMs)]);
    },
    shutdown(timeoutMs) {
      shut ??= (async () => {
        drain();
        await Promise.all([spanQueue?.close(timeoutMs), logQueue?.close(timeoutMs)]);
        // a last metrics push, so the final counts are not lost
        if (push !== null) {
          const deadline = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
          await Promise.race([push.stop(), deadline]);
        }
        for (const ch of channels.values()) ch.close();
        log.info('telemetry stopped', { traces: counters.traces, logs: counters.logs, metrics: counters.metrics });
      })();
      return shut;
    },
  };
}

/**
 * Pushes the registry's metrics over OTLP every `intervalMs` (cumulative, so a lost push loses
 * only freshness). One export in flight at a time: a tick that finds one running is skipped.
 * The channel bounds each export by the target's `timeoutMs`. `stop()` ends the timer and makes
 * a last push, so counts from the final interval are not lost. `before` runs ahead of every
 * collection (it writes the decisions counted later, `Deferred`).
 */
function startMetricPush(registry: MetricRegistry, channel: OtlpChannel, intervalMs: number, counters: ExportCounters, before: () => void): { stop(): Promise<void> } {
  let inFlight: Promise<void> | null = null;
  const once = (): Promise<void> => {
    if (inFlight !== null) return inFlight;
    before();
    const rm = registry.collect();
    let n = 0;
    for (const s of rm.scopeMetrics) n += s.metrics.length;
    if (n === 0) return Promise.resolve();
    const body = encodeMetricsRequest(rm);
    let finished = false;
    const p = new Promise<void>((resolve) => {
      // `done` may run before `send` returns (the client refuses at once while it backs off).
      channel.send(EXPORT_PATHS.metrics, body, (err) => {
        if (err === null) counters.exported += n;
        else {
          counters.failedExports++;
          counters.droppedExportFailed += n;
        }
        finished = true;
        resolve();
      });
    });
    if (!finished) {
      inFlight = p;
      void p.then(() => {
        if (inFlight === p) inFlight = null;
      });
    }
    return p;
  };
  const timer = setInterval(() => void once(), intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      if (inFlight !== null) await inFlight;
      await once();
    },
  };
}
