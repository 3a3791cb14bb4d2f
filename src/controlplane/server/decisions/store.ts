/**
 * The control plane's memory of recent decisions: a ring buffer of the last `capacity` decision
 * records received over OTLP (the earliest received evicted first), per-service counters since
 * start, and live subscribers for `ward decisions --follow`. Queries answer in decision time
 * (`timeMs`) order; followers get records in arrival order (see `subscribe`). Bounded everywhere: the ring, the per-service map
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
  /** `dry-run-deny`: the dry-run rule that would have denied; "" otherwise. */
  readonly dryRunRule: string;
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
  /**
   * Matching records, oldest first by decision time (`timeMs`; same millisecond: by arrival); at
   * most `limit`, the most recent ones among the records held.
   */
  query(f: DecisionFilter, limit: number): StoredDecision[];
  /**
   * New matching records as they arrive, in arrival order: a sidecar's late batch may be older
   * than records already delivered. Followers are not held back to reorder (that would delay
   * every record by the longest export delay); each record carries its time. `onGap(n)`: n
   * records were not delivered (slow reader).
   */
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
      // Records arrive in export batches (each sidecar's `queue.delayMs`, 1 s by default), so
      // arrival order across sidecars is not decision order, and the newest arrivals are not
      // the most recent decisions (found in review). The `limit` latest by (timeMs, arrival) are
      // kept in a min-heap of arrival positions while scanning: O(n log limit) at worst, and
      // about n comparisons when arrival is nearly in time order (each older record is refused
      // at the heap's root); `add` stays O(1).
      const k = Math.min(limit, count);
      if (k <= 0) return [];
      const start = (head - count + capacity) % capacity;
      const at = (pos: number): StoredDecision => ring[(start + pos) % capacity] as StoredDecision;
      /** Earlier in the output: decided earlier, or at the same millisecond and arrived earlier. */
      const before = (a: number, b: number): boolean => {
        const ta = at(a).timeMs;
        const tb = at(b).timeMs;
        return ta < tb || (ta === tb && a < b);
      };
      const heap: number[] = [];
      for (let pos = count - 1; pos >= 0; pos--) {
        if (!matches(at(pos), f)) continue;
        if (heap.length < k) heapPush(heap, pos, before);
        else if (before(heap[0] as number, pos)) heapReplaceTop(heap, pos, before);
      }
      heap.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
      return heap.map(at);
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

/** Binary min-heap helpers over `before` (query's ordering). */
function heapPush(h: number[], v: number, before: (a: number, b: number) => boolean): void {
  let i = h.push(v) - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!before(v, h[p] as number)) break;
    h[i] = h[p] as number;
    i = p;
  }
  h[i] = v;
}

function heapReplaceTop(h: number[], v: number, before: (a: number, b: number) => boolean): void {
  const n = h.length;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && before(h[r] as number, h[l] as number) ? r : l;
    if (!before(h[c] as number, v)) break;
    h[i] = h[c] as number;
    i = c;
  }
  h[i] = v;
}
