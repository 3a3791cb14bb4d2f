import * as grpc from '@grpc/grpc-js';
import { ERROR_TABLE } from '../../../errors/table.ts';
import { tokenHash } from '../../../lib/hash.ts';
import type { Logger } from '../../../lib/log.ts';
import type { Identity } from '../../../policy/model.ts';
import { type Authenticate, type BindingCheck, bearerFromMetadata, isLoopbackPeer } from '../access.ts';
import type { DecisionStore, StoredDecision } from '../decisions/store.ts';
import type { TelemetryReceiverConfig } from './config.ts';
import type { Forwarder } from './forward.ts';
import { type AnyValueWire, type LogRecordWire, OTLP_SERVICES, type OtlpSignal, rawOtlpService } from './proto.ts';
import { AMBIGUOUS, type ResourceValue, scanLogsRequest, scanResourceServices } from './scan.ts';

/**
 * The control plane as an OTLP/gRPC receiver: `opentelemetry.proto.collector.{trace,logs,metrics}.v1`
 * `Export` on the control plane's own port. Every accepted request is forwarded as received (when
 * forwarding is configured); log requests are also decoded, and their `ward.decision` records go
 * to the decision store behind `ward decisions`.
 *
 * Who may export: loopback callers without a token (configurable), anyone else with a valid
 * bearer token (ward's authenticator, as for the policy stream). A decision record from an
 * authenticated caller is kept only if its `ward.service` is bound to the caller's identity, so a
 * sidecar cannot write another service's decisions; a record whose decision attributes repeat
 * or are not one plain value is refused too, from any caller (`decisionOf`). Refused records are
 * reported in the OTLP `partial_success`, and their Export is not forwarded.
 */

export interface ReceiverCounters {
  readonly requests: Record<OtlpSignal, number>;
  /** Decision records stored. */
  decisions: number;
  /** Decision records refused (service not bound to the caller, or attributes read two ways: `decisionOf`). */
  rejected: number;
  /** Export calls refused (authentication, malformed). */
  refused: number;
}

export interface OtlpReceiver {
  /** Adds the three Export services to `server`. */
  register(server: grpc.Server): void;
  readonly counters: Readonly<ReceiverCounters>;
}

export interface OtlpReceiverOptions {
  readonly config: TelemetryReceiverConfig;
  readonly store: DecisionStore;
  readonly forwarder: Forwarder | null;
  readonly authenticator: Authenticate;
  readonly bindings: BindingCheck;
  readonly log: Logger;
}

type Callback = grpc.sendUnaryData<unknown>;
const EMPTY = Object.freeze({});
const PATHS: Record<OtlpSignal, string> = {
  traces: `/${OTLP_SERVICES.traces}/Export`,
  logs: `/${OTLP_SERVICES.logs}/Export`,
  metrics: `/${OTLP_SERVICES.metrics}/Export`,
};

export function createOtlpReceiver(opts: OtlpReceiverOptions): OtlpReceiver {
  const { log, store } = opts;
  const counters: ReceiverCounters = { requests: { traces: 0, logs: 0, metrics: 0 }, decisions: 0, rejected: 0, refused: 0 };

  async function authorize(call: grpc.ServerUnaryCall<Buffer, unknown>): Promise<{ ok: true; identity: Identity | null } | { ok: false; status: grpc.StatusObject }> {
    const peer = call.getPeer();
    const hasToken = call.metadata.get('authorization').length > 0;
    if (!hasToken && opts.config.allowLoopbackWithoutToken && isLoopbackPeer(peer)) return { ok: true, identity: null };
    const bearer = bearerFromMetadata(call.metadata);
    const refuse = (code: keyof typeof ERROR_TABLE): { ok: false; status: grpc.StatusObject } => ({
      ok: false,
      status: { code: ERROR_TABLE[code].grpc, details: ERROR_TABLE[code].message, metadata: new grpc.Metadata() },
    });
    if (!bearer.ok) return refuse(bearer.code);
    try {
      const r = await opts.authenticator.authenticate(bearer.token);
      if (r.ok) return { ok: true, identity: r.identity };
      log.info('OTLP export refused', { peer, code: r.error.code, token: tokenHash(bearer.token) });
      return refuse(r.error.code);
    } catch (err) {
      log.error('authenticator failed', { peer, err, token: tokenHash(bearer.token) });
      return refuse('ERR_INTERNAL');
    }
  }

  /**
   * An authenticated exporter sends telemetry of its own services only: every resource carries a
   * `ward.service` and a `service.name` bound to it, or nothing of the Export is stored or
   * forwarded (found in review: an exporter bound to one service passed spans and metrics named
   * after any other to the collector, where traces are read to learn why a call was allowed).
   * Both, because a collector shows `service.name` and ward's records name `ward.service`; a
   * sidecar whose `telemetry.serviceName` differs from its service needs that name bound too.
   */
  function unboundResources(body: Buffer, identity: Identity): string[] {
    const unbound: string[] = [];
    const check = (key: string, v: ResourceValue): void => {
      if (typeof v === 'string' && opts.bindings(identity, v)) return;
      if (unbound.length < 5) unbound.push(v === null ? `no ${key}` : v === AMBIGUOUS ? `${key} ambiguous` : `${key} ${v.slice(0, 128)}`);
    };
    scanResourceServices(body, (r) => {
      check('ward.service', r.wardService);
      check('service.name', r.serviceName);
    });
    return unbound;
  }

  function accept(signal: OtlpSignal, body: Buffer, identity: Identity | null, cb: Callback): void {
    counters.requests[signal]++;
    if (identity !== null) {
      let unbound: string[];
      try {
        unbound = unboundResources(body, identity);
      } catch (err) {
        counters.refused++;
        cb({ code: grpc.status.INVALID_ARGUMENT, details: `malformed OTLP ${signal} export: ${(err as Error).message}` });
        return;
      }
      if (unbound.length > 0) {
        counters.refused++;
        log.warn('OTLP export refused: resources of services not bound to the exporter', { signal, subject: identity.subject, services: unbound });
        cb({ code: grpc.status.PERMISSION_DENIED, details: 'telemetry for services not bound to the caller (a resource whose ward.service or service.name is missing, ambiguous or not bound): nothing stored or forwarded' });
        return;
      }
    }
    let rejected = 0;
    let ambiguous = 0;
    if (signal === 'logs') {
      // Decided first, stored after: a malformed request stores nothing.
      const found: StoredDecision[] = [];
      try {
        scanLogsRequest(body, (lr, instanceId) => {
          const d = decisionOf(lr, instanceId);
          if (d === null) return;
          if (d === 'ambiguous') {
            rejected++;
            ambiguous++;
          } else if (identity !== null && !opts.bindings(identity, d.service)) rejected++;
          else found.push(d);
        });
      } catch (err) {
        counters.refused++;
        cb({ code: grpc.status.INVALID_ARGUMENT, details: `malformed ExportLogsServiceRequest: ${(err as Error).message}` });
        return;
      }
      for (const d of found) {
        store.add(d);
        counters.decisions++;
      }
      if (rejected > 0) {
        counters.rejected += rejected;
        if (rejected > ambiguous) log.warn('decision records refused: service not bound to the exporter', { subject: identity?.subject, rejected: rejected - ambiguous });
        if (ambiguous > 0) log.warn('decision records refused: repeated or ambiguous decision attributes', { subject: identity?.subject, rejected: ambiguous });
      }
    }
    // An Export with records the control plane refused is not sent on either: byte for byte it
    // would carry them to the collector behind it (found in review).
    if (rejected === 0) opts.forwarder?.forward(PATHS[signal], body);
    if (rejected > 0) {
      cb(null, { partialSuccess: { rejectedLogRecords: rejected, errorMessage: 'decision records for services not bound to the caller, or with repeated or ambiguous ward attributes, were refused; the export was not forwarded' } });
    } else cb(null, EMPTY);
  }

  function handler(signal: OtlpSignal) {
    return (call: grpc.ServerUnaryCall<Buffer, unknown>, cb: Callback): void => {
      void authorize(call).then((a) => {
        if (!a.ok) {
          counters.refused++;
          cb(a.status);
          return;
        }
        try {
          accept(signal, call.request, a.identity, cb);
        } catch (err) {
          log.error('OTLP export failed', { signal, err });
          cb({ code: grpc.status.INTERNAL, details: 'internal error' });
        }
      });
    };
  }

  return {
    counters,
    register(server) {
      for (const signal of ['traces', 'logs', 'metrics'] as const) server.addService(rawOtlpService(signal), { Export: handler(signal) });
    },
  };
}

function value(v: AnyValueWire | null | undefined): string {
  if (v === null || v === undefined) return '';
  switch (v.value) {
    case 'stringValue':
      return v.stringValue ?? '';
    case 'intValue':
      return v.intValue ?? '';
    case 'boolValue':
      return String(v.boolValue);
    case 'doubleValue':
      return String(v.doubleValue);
    default:
      return '';
  }
}

const MAX_FIELD = 512;

function nanosToMs(ns: string): number {
  if (ns === '' || ns === '0') return 0;
  try {
    return Number(BigInt(ns) / 1_000_000n);
  } catch {
    return 0;
  }
}

function hexId(b: Buffer | undefined, len: number): string {
  if (b === undefined || b.length !== len) return '';
  const h = b.toString('hex');
  return /^0+$/.test(h) ? '' : h;
}

/** The attributes a decision is read from. */
const DECISION_ATTRIBUTES = new Set([
  'ward.service',
  'ward.decision',
  'ward.direction',
  'ward.reason',
  'ward.rule',
  'ward.policy.version',
  'ward.issuer',
  'ward.route',
  'ward.decision_id',
  'ward.destination',
  'ward.exchange.outcome',
  'ward.dry_run.rule',
  'enduser.id',
  'http.request.method',
]);
const SCALAR = new Set<AnyValueWire['value']>(['stringValue', 'intValue', 'boolValue', 'doubleValue']);

/**
 * A `ward.decision` log record as a stored decision; null for any other record; `ambiguous` for
 * one that a collector may read otherwise than this function does, which the receiver refuses
 * (the Export is not forwarded, as for an unbound service).
 *
 * The Export goes on byte for byte, so the binding check holds only if the control plane and the
 * collector read the same service. A collector looks an attribute up by its first occurrence
 * (pdata `Map.Get`), merges a value sent in parts, and renders an array or map as text; this reads
 * one plain value per key. Reading as a collector would (first key wins, protobuf merging) would
 * still be one reader among several (others take the last key), so a record that can be read
 * two ways is refused instead: fail closed. A sidecar's exporter sends each attribute once, as
 * one string, so none of its records is refused for this.
 */
export function decisionOf(lr: LogRecordWire, instanceId: string): StoredDecision | 'ambiguous' | null {
  if (lr.eventName !== '' && lr.eventName !== 'ward.decision') return null;
  const a = new Map<string, string>();
  for (const kv of lr.attributes) {
    if (!DECISION_ATTRIBUTES.has(kv.key)) continue;
    if (a.has(kv.key) || kv.ambiguous === true) return 'ambiguous';
    const kind = kv.value?.value;
    // Absent or empty reads as "" everywhere; an array, map or bytes does not.
    if (kind !== undefined && !SCALAR.has(kind)) return 'ambiguous';
    if (kv.key === 'ward.service' && kind !== undefined && kind !== 'stringValue') return 'ambiguous';
    a.set(kv.key, value(kv.value).slice(0, MAX_FIELD));
  }
  const decision = a.get('ward.decision');
  const service = a.get('ward.service');
  if (decision === undefined || service === undefined || service === '') return null;
  return {
    timeMs: nanosToMs(lr.timeUnixNano) || nanosToMs(lr.observedTimeUnixNano),
    service,
    direction: a.get('ward.direction') ?? 'inbound',
    decision,
    reason: a.get('ward.reason') ?? '',
    rule: a.get('ward.rule') ?? '',
    policyVersion: a.get('ward.policy.version') ?? '',
    issuer: a.get('ward.issuer') ?? '',
    subject: a.get('enduser.id') ?? '',
    method: a.get('http.request.method') ?? '',
    route: a.get('ward.route') ?? '',
    decisionId: a.get('ward.decision_id') ?? '',
    traceId: hexId(lr.traceId, 16),
    spanId: hexId(lr.spanId, 8),
    instanceId: instanceId.slice(0, MAX_FIELD),
    destination: a.get('ward.destination') ?? '',
    exchangeOutcome: a.get('ward.exchange.outcome') ?? '',
    dryRunRule: a.get('ward.dry_run.rule') ?? '',
  };
}
