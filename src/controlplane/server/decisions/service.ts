import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ERROR_TABLE } from '../../../errors/table.ts';
import type { ErrorCode } from '../../../errors/codes.ts';
import { tokenHash } from '../../../lib/hash.ts';
import type { Logger } from '../../../lib/log.ts';
import { type Authenticate, bearerFromMetadata, isLoopbackPeer } from '../access.ts';
import type { DecisionFilter, DecisionStore, StoredDecision } from './store.ts';

/**
 * ward.v1.DecisionLog (proto/ward/v1/control_plane.proto): the decision store over gRPC, for
 * `ward decisions`. Access is that of GetStatus: loopback without a token (by default), else a
 * valid token whose subject is listed in `status.subjects` - decisions name callers.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../../../proto/', import.meta.url));
export const DECISION_LOG_SERVICE = 'ward.v1.DecisionLog';

let ctor: grpc.ServiceClientConstructor | undefined;

export function decisionLogClient(): grpc.ServiceClientConstructor {
  if (ctor === undefined) {
    const def = protoLoader.loadSync('ward/v1/control_plane.proto', { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT] });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { ward: { v1: { DecisionLog: grpc.ServiceClientConstructor } } };
    ctor = pkg.ward.v1.DecisionLog;
  }
  return ctor;
}

// ---- wire shapes

export interface DecisionQueryWire {
  service: string;
  decision: string;
  reason: string;
  subject: string;
  sinceUnixMs: number;
  untilUnixMs: number;
  limit: number;
  follow: boolean;
}

export interface DecisionEntryWire {
  timeUnixMs: number;
  service: string;
  direction: string;
  decision: string;
  reason: string;
  rule: string;
  policyVersion: string;
  issuer: string;
  subject: string;
  method: string;
  route: string;
  decisionId: string;
  traceId: string;
  spanId: string;
  instanceId: string;
  destination: string;
  exchangeOutcome: string;
  missed: number;
  dryRunRule: string;
}

export interface DecisionSummaryWire {
  services: {
    service: string;
    allowed: number;
    denied: number;
    dryRunDenied: number;
    reasons: { reason: string; count: number }[];
    lastUnixMs: number;
  }[];
  received: number;
  evicted: number;
  capacity: number;
}

export function toWire(d: StoredDecision): DecisionEntryWire {
  return {
    timeUnixMs: d.timeMs,
    service: d.service,
    direction: d.direction,
    decision: d.decision,
    reason: d.reason,
    rule: d.rule,
    policyVersion: d.policyVersion,
    issuer: d.issuer,
    subject: d.subject,
    method: d.method,
    route: d.route,
    decisionId: d.decisionId,
    traceId: d.traceId,
    spanId: d.spanId,
    instanceId: d.instanceId,
    destination: d.destination,
    exchangeOutcome: d.exchangeOutcome,
    missed: 0,
    dryRunRule: d.dryRunRule,
  };
}

export function filterOf(q: Partial<DecisionQueryWire>): DecisionFilter {
  const f: { -readonly [K in keyof DecisionFilter]: DecisionFilter[K] } = {};
  if (q.service) f.service = q.service;
  if (q.decision) f.decision = q.decision;
  if (q.reason) f.reason = q.reason;
  if (q.subject) f.subject = q.subject;
  if (q.sinceUnixMs) f.sinceMs = q.sinceUnixMs;
  if (q.untilUnixMs) f.untilMs = q.untilUnixMs;
  return f;
}

export interface DecisionServiceOptions {
  readonly store: DecisionStore;
  readonly authenticator: Authenticate;
  readonly access: { readonly allowLoopbackWithoutToken: boolean; readonly subjects: readonly string[] };
  readonly log: Logger;
}

/** Ends open follow streams (shutdown). */
export interface DecisionService {
  register(server: grpc.Server): void;
  close(): void;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

function refusal(code: ErrorCode): grpc.StatusObject {
  return { code: ERROR_TABLE[code].grpc, details: ERROR_TABLE[code].message, metadata: new grpc.Metadata() };
}

export function createDecisionService(opts: DecisionServiceOptions): DecisionService {
  const { store, log } = opts;
  const followers = new Set<grpc.ServerWritableStream<DecisionQueryWire, DecisionEntryWire>>();

  /** null when allowed; `expiresAt` (seconds) of the caller's token is in `granted`, none for loopback without one. */
  async function authorize(md: grpc.Metadata, peer: string, granted?: { expiresAt: number | null }): Promise<grpc.StatusObject | null> {
    const hasToken = md.get('authorization').length > 0;
    if (!hasToken && opts.access.allowLoopbackWithoutToken && isLoopbackPeer(peer)) return null;
    const bearer = bearerFromMetadata(md);
    if (!bearer.ok) return refusal(bearer.code);
    try {
      const r = await opts.authenticator.authenticate(bearer.token);
      if (!r.ok) {
        log.info('decision query refused', { peer, code: r.error.code, token: tokenHash(bearer.token) });
        return refusal(r.error.code);
      }
      if (!opts.access.subjects.includes(r.identity.subject)) {
        log.warn('decision query refused: subject not allowed', { peer, subject: r.identity.subject });
        return { code: grpc.status.PERMISSION_DENIED, details: 'identity may not read decisions', metadata: new grpc.Metadata() };
      }
      if (granted !== undefined) granted.expiresAt = r.identity.expiresAt;
      return null;
    } catch (err) {
      log.error('authenticator failed', { peer, err, token: tokenHash(bearer.token) });
      return refusal('ERR_INTERNAL');
    }
  }

  function streamDecisions(call: grpc.ServerWritableStream<DecisionQueryWire, DecisionEntryWire>): void {
    void (async () => {
      const granted: { expiresAt: number | null } = { expiresAt: null };
      const refused = await authorize(call.metadata, call.getPeer(), granted);
      if (refused !== null) {
        call.emit('error', refused);
        return;
      }
      // Gone while its token was checked: its 'cancelled' has fired already, so a subscription
      // made now would never be closed (found in review).
      if (call.cancelled) return;
      const q = call.request;
      const f = filterOf(q);
      const limit = q.limit > 0 ? q.limit : 100;
      // Subscribe before the snapshot so nothing that arrives in between is lost; records that
      // are in both are skipped by identity.
      const pending: StoredDecision[] = [];
      let live = false;
      let sub: { close(): void } | null = null;
      if (q.follow) {
        const { untilMs: _until, ...followFilter } = f;
        // A follower that does not read is not written to: what it misses is counted and told
        // once it drains. grpc-js would otherwise buffer every record for it, without bound
        // (found in review: the store's own per-subscriber bound never filled).
        let blocked = false;
        let missed = 0;
        const send = (e: DecisionEntryWire): void => {
          if (!call.write(e)) blocked = true;
        };
        call.on('drain', () => {
          blocked = false;
          if (missed > 0 && !call.cancelled) {
            const n = missed;
            missed = 0;
            send({ ...EMPTY_ENTRY, missed: n });
          }
        });
        sub = store.subscribe(
          followFilter,
          (d) => {
            if (!live) pending.push(d);
            else if (call.cancelled) return;
            else if (blocked) missed++;
            else send(toWire(d));
          },
          (n) => {
            if (call.cancelled) return;
            if (blocked) missed += n;
            else send({ ...EMPTY_ENTRY, missed: n });
          },
        );
      }
      // The snapshot is in decision-time order; what arrives after it is written as it arrives
      // (store.ts `subscribe`), so a sidecar's late batch may follow newer records already shown.
      const snapshot = store.query(f, limit);
      const seen = new Set(snapshot);
      for (const d of snapshot) call.write(toWire(d));
      if (sub === null) {
        call.end();
        return;
      }
      for (const d of pending) if (!seen.has(d)) call.write(toWire(d));
      pending.length = 0;
      live = true;
      followers.add(call);
      // Zero trust does not end at connect: a follow stream ends when its token does, as a
      // policy stream does (found in review: it went on for as long as the caller liked).
      let expiry: NodeJS.Timeout | null = null;
      if (granted.expiresAt !== null) {
        expiry = setTimeout(() => {
          if (!call.cancelled) call.emit('error', refusal('ERR_TOKEN_EXPIRED'));
        }, Math.min(Math.max(granted.expiresAt * 1000 - Date.now(), 0), MAX_TIMER_MS));
        expiry.unref();
      }
      const stop = (): void => {
        if (expiry !== null) clearTimeout(expiry);
        sub?.close();
        followers.delete(call);
      };
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    })();
  }

  function getSummary(call: grpc.ServerUnaryCall<{ service: string }, DecisionSummaryWire>, cb: grpc.sendUnaryData<DecisionSummaryWire>): void {
    void (async () => {
      const refused = await authorize(call.metadata, call.getPeer());
      if (refused !== null) return cb(refused);
      const s = store.summary(call.request.service === '' ? undefined : call.request.service);
      cb(null, {
        services: s.services.map((x) => ({
          service: x.service,
          allowed: x.allowed,
          denied: x.denied,
          dryRunDenied: x.dryRunDenied,
          reasons: Object.entries(x.reasons)
            .map(([reason, count]) => ({ reason, count }))
            .sort((a, b) => b.count - a.count || (a.reason < b.reason ? -1 : 1)),
          lastUnixMs: x.lastMs,
        })),
        received: s.received,
        evicted: s.evicted,
        capacity: s.capacity,
      });
    })();
  }

  return {
    register(server) {
      server.addService(decisionLogClient().service, { StreamDecisions: streamDecisions, GetDecisionSummary: getSummary });
    },
    close() {
      for (const c of followers) c.end();
      followers.clear();
    },
  };
}

const EMPTY_ENTRY: DecisionEntryWire = Object.freeze({
  timeUnixMs: 0,
  service: '',
  direction: '',
  decision: '',
  reason: '',
  rule: '',
  policyVersion: '',
  issuer: '',
  subject: '',
  method: '',
  route: '',
  decisionId: '',
  traceId: '',
  spanId: '',
  instanceId: '',
  destination: '',
  exchangeOutcome: '',
  missed: 0,
  dryRunRule: '',
});
