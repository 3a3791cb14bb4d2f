/**
 * The control plane's memory of recent decisions: a ring buffer of the last `capacity` decision
 * records received over OTLP (oldest evicted first), per-service counters since start, and live
 * subscribers for `ward decisions --follow`. Bounded everywhere: the ring, the per-service map
 * (services beyond `maxServices` are counted under `(other)`), and each subscriber's backlog (a
 * subscriber that cannot keep up is told how many it missed, then continues).
 */

export interface StoredDecision {
  /** Milliseconds since the epoch (the sidecar's decision time). */
  readonly timeMs: number;
  readonly service: string;
  /** `inbound` or `outbound`. */
  readonly direction: string;
  /** `allow`, `deny` or `dry-run-deny`. */
  readonly decision: string;
  /** Reason code, "" on a plain allow. */
  readonly reason: string;
  readonly rule: string;
  readonly policyVersion: string;
  readonly issuer: string;
  /** The caller's subject, "" without a token. */
  readonly subject: string;
  /** HTTP method (`POST` for gRPC). */
  readonly method: string;
  /** gRPC method or normalized HTTP path. */
  readonly route: string;
  readonly decisionId: string;
  /** 32 hex characters, "" when unknown. */
  readonly traceId: string;
  readonly spanId: string;
  /** `service.instance.id` of the sidecar that decided. */
  readonly instanceId: string;
  readonly destination: string;
  readonly exchangeOutcome: string;
}

export interface DecisionFilter {
  readonly service?: string;
  readonly decision?: string;
  readonly reason?: string;
  readonly subject?: string;
  readonly sinceMs?: number;
  readonly untilMs?: number;
}

export interface ServiceSummary {
  readonly service: string;
  readonly allowed: number;
  readonly denied: number;
  readonly dryRunDenied: number;
  /** Count per reason code (denials and dry-run denials). */
  readonly reasons: Readonly<Record<string, number>>;
  readonly lastMs: number;
}

export interface Subscription {
  close(): void;
}

export interface DecisionStore {
  add(d: StoredDecision): void;
  /** Matching records, oldest first; at most `limit`, the most recent ones. */
  query(f: DecisionFilter, limit: number): StoredDecision[];
  /** New matching records as they arrive. `onGap(n)`: n records were not delivered (slow reader). */
  subscribe(f: DecisionFilter, onRecord: (d: StoredDecision) => void, onGap?: (missed: number) => void): Subscription;
  summary(service?: string): { services: ServiceSummary[]; received: number; evicted: number; capacity: number };
  size(): number;
}

export const OTHER_SERVICES = '(other)';

export function matches(d: StoredDecision, f: DecisionFilter): boolean {
  return (
    (f.service === undefined || f.service === d.service) &&
    (f.decision === undefined || f.decision === d.decision) &&
    (f.reason === undefined || f.reason === d.reason) &&
    (f.subject === undefined || f.subject === d.subject) &&
    (f.sinceMs === undefined || d.timeMs >= f.sinceMs) &&
    (f.untilMs === undefined || d.timeMs <= f.untilMs)
  );
}

interface MutableSummary {
  allowed: number;
  denied: number;
  dryRunDenied: number;
  reasons: Map<string, number>;
  lastMs: number;
}

interface Subscriber {
  readonly filter: DecisionFilter;
  readonly onRecord: (d: StoredDecision) => void;
  readonly onGap: ((missed: number) => void) | undefined;
  backlog: StoredDecision[];
  missed: number;
  scheduled: boolean;
}

export function createDecisionStore(opts: { readonly capacity: number; readonly maxServices?: number; readonly maxBacklog?: number }): DecisionStore {
  const capacity = opts.capacity;
  const maxServices = opts.maxServices ?? 1000;
  const maxBacklog = opts.maxBacklog ?? 1000;
  const ring: (StoredDecision | undefined)[] = new Array<StoredDecision | undefined>(capacity);
  let head = 0; // next write position
  let count = 0;
  let received = 0;
  let evicted = 0;
  const services = new Map<string, MutableSummary>();
  const subscribers = new Set<Subscriber>();

  function summaryFor(service: string): MutableSummary {
    let s = services.get(service);
    if (s === undefined) {
      const key = services.size >= maxServices ? OTHER_SERVICES : service;
      s = services.get(key);
      if (s === undefined) {
        s = { allowed: 0, denied: 0, dryRunDenied: 0, reasons: new Map(), lastMs: 0 };
        services.set(key, s);
      }
    }
    return s;
  }

  function deliver(sub: Subscriber): void {
    sub.scheduled = false;
    if (!subscribers.has(sub)) return;
    if (sub.missed > 0 && sub.onGap !== undefined) {
      const n = sub.missed;
      sub.missed = 0;
      sub.onGap(n);
    }
    const batch = sub.backlog;
    sub.backlog = [];
    for (const d of batch) sub.onRecord(d);
  }

  return {
    add(d) {
      received++;
      if (count === capacity) evicted++;
      else count++;
      ring[head] = d;
      head = (head + 1) % capacity;
      const s = summaryFor(d.service);
      if (d.decision === 'allow') s.allowed++;
      else if (d.decision === 'deny') s.denied++;
      else s.dryRunDenied++;
      if (d.reason !== '' && (s.reasons.size < 256 || s.reasons.has(d.reason))) s.reasons.set(d.reason, (s.reasons.get(d.reason) ?? 0) + 1);
      if (d.timeMs > s.lastMs) s.lastMs = d.timeMs;
      // Delivery is deferred to a microtask so a receiver's Export call never runs subscriber code.
      for (const sub of subscribers) {
        if (!matches(d, sub.filter)) continue;
        if (sub.backlog.length >= maxBacklog) sub.missed++;
        else sub.backlog.push(d);
        if (!sub.scheduled) {
          sub.scheduled = true;
          queueMicrotask(() => deliver(sub));
        }
      }
    },
    query(f, limit) {
      const out: StoredDecision[] = [];
      // Newest first while collecting, so `limit` keeps the most recent; reversed at the end.
      for (let i = 0; i < count && out.length < limit; i++) {
        const d = ring[(head - 1 - i + capacity) % capacity] as StoredDecision;
        if (matches(d, f)) out.push(d);
      }
      return out.reverse();
    },
    subscribe(f, onRecord, onGap) {
      const sub: Subscriber = { filter: f, onRecord, onGap, backlog: [], missed: 0, scheduled: false };
      subscribers.add(sub);
      return { close: () => subscribers.delete(sub) };
    },
    summary(service) {
      const list: ServiceSummary[] = [];
      for (const [name, s] of services) {
        if (service !== undefined && service !== name) continue;
        list.push({ service: name, allowed: s.allowed, denied: s.denied, dryRunDenied: s.dryRunDenied, reasons: Object.fromEntries(s.reasons), lastMs: s.lastMs });
      }
      list.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
      return { services: list, received, evicted, capacity };
    },
    size: () => count,
  };
}
