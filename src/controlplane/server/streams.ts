import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { MAX_NACK_MESSAGE, MAX_VERSION_INFO, type PolicyRequestWire, type PolicyResponseWire, type SidecarStatusWire } from '../proto.ts';
import type { PolicyStore } from './store.ts';

/**
 * The xDS state machine of each policy stream, and the fan-out from the store to streams.
 * Transport-free: the gRPC handler (server.ts) authenticates, decodes and hands requests in;
 * responses leave through `send`.
 *
 * Per stream the server remembers only (bounded, whatever the sidecar sends):
 * - `held`: the version the sidecar says it enforces (announced on connect, then ACKed/NACKed);
 * - `pending`: the one response sent and not yet answered (version + nonce);
 * - the last few versions it NACKed since its last ACK, and its last NACK.
 * A request whose version_info is longer than any version (MAX_VERSION_INFO) ends the stream
 * with INVALID_ARGUMENT instead of being kept, logged and reported.
 *
 * A push happens when the service's served version is neither held, pending, nor NACKed. While a
 * response is pending nothing else is sent; the answer to it triggers the next check, so a
 * version published meanwhile follows right after the ACK.
 *
 * An ACK forgets the NACKed versions (xDS: a NACK refuses that push, not the content for ever).
 * Versions are content hashes, so a file reverted to a version the sidecar once refused becomes
 * current again with the same name; it is offered once more, and refused at most once each time
 * it becomes current. Until the next ACK it is not resent, so a sidecar that keeps refusing it
 * is not pushed it in a loop.
 */

export interface StreamIdentity {
  readonly subject: string;
  readonly issuer: string;
}

export interface OpenStream {
  readonly service: string;
  readonly instanceId: string;
  /** version_info of the first request: what the sidecar restored from its state directory. */
  readonly versionInfo: string;
  readonly identity: StreamIdentity;
  readonly peer: string;
  readonly send: (response: PolicyResponseWire) => void;
}

export type RequestOutcome =
  | { readonly kind: 'ack'; readonly version: string }
  | { readonly kind: 'nack'; readonly version: string; readonly message: string }
  | { readonly kind: 'stale' }
  | { readonly kind: 'invalid'; readonly message: string };

export interface StreamHandle {
  readonly id: number;
  /** A later request on the stream: an ACK, a NACK, or stale (ignored). */
  onRequest(req: PolicyRequestWire): RequestOutcome;
  close(): void;
}

export interface StreamRegistry {
  open(s: OpenStream): StreamHandle;
  size(): number;
  status(service?: string): SidecarStatusWire[];
  close(): void;
}

/** NACKed versions remembered per stream until its next ACK; older ones may be offered again (bounded state). */
const NACKED_MEMORY = 8;

interface StreamState {
  readonly id: number;
  readonly open: OpenStream;
  readonly connectedSince: number;
  held: string;
  pending: { readonly version: string; readonly nonce: string } | null;
  nonceSeq: number;
  readonly nacked: string[];
  lastNack: { readonly version: string; readonly message: string; readonly at: number } | null;
  nackCount: number;
  closed: boolean;
}

export function createStreamRegistry(opts: { store: PolicyStore; controlPlaneId: string; log: Logger; clock: Clock }): StreamRegistry {
  const { store, log, clock } = opts;
  const byService = new Map<string, Set<StreamState>>();
  let nextId = 1;
  let count = 0;

  function maybePush(s: StreamState): void {
    if (s.closed || s.pending !== null) return;
    const current = store.get(s.open.service);
    if (current === undefined) return; // unknown or deleted service: nothing to say (no delete in SotW)
    if (current.version === s.held || s.nacked.includes(current.version)) return;
    const nonce = String(++s.nonceSeq);
    s.pending = { version: current.version, nonce };
    log.debug('policy push', { stream: s.id, service: current.service, instance: s.open.instanceId, version: current.version, nonce });
    s.open.send({
      versionInfo: current.version,
      nonce,
      service: current.service,
      policy: { fileName: current.file, text: current.text },
      controlPlaneId: opts.controlPlaneId,
    });
  }

  const unsubscribe = store.subscribe((changed) => {
    for (const service of changed) {
      const set = byService.get(service);
      if (set === undefined) continue;
      for (const s of set) maybePush(s);
    }
  });

  return {
    open(o) {
      const s: StreamState = {
        id: nextId++,
        open: o,
        connectedSince: clock(),
        held: o.versionInfo,
        pending: null,
        nonceSeq: 0,
        nacked: [],
        lastNack: null,
        nackCount: 0,
        closed: false,
      };
      let set = byService.get(o.service);
      if (set === undefined) {
        set = new Set();
        byService.set(o.service, set);
      }
      set.add(s);
      count++;
      log.info('sidecar connected', { stream: s.id, service: o.service, instance: o.instanceId, subject: o.identity.subject, peer: o.peer, version: o.versionInfo });
      maybePush(s);

      return {
        id: s.id,
        onRequest(req) {
          if (s.closed) return { kind: 'stale' };
          if (req.service !== '' && req.service !== o.service) return { kind: 'invalid', message: 'a stream subscribes to one service; open another stream for another service' };
          // Checked before the nonce: nothing the sidecar sends is kept or logged unbounded.
          if (req.versionInfo.length > MAX_VERSION_INFO) return { kind: 'invalid', message: VERSION_INFO_TOO_LONG };
          // xDS: a request must answer the outstanding response; anything else is stale
          // (e.g. it crossed a newer push, or repeats an old nonce) and is ignored.
          if (s.pending === null || req.responseNonce !== s.pending.nonce) {
            log.debug('stale nonce ignored', { stream: s.id, nonce: req.responseNonce, expected: s.pending?.nonce ?? null });
            return { kind: 'stale' };
          }
          const answered = s.pending;
          s.pending = null;
          let outcome: RequestOutcome;
          if (req.errorDetail !== null) {
            const message = truncate(req.errorDetail.message, MAX_NACK_MESSAGE);
            s.nacked.push(answered.version);
            if (s.nacked.length > NACKED_MEMORY) s.nacked.shift();
            s.lastNack = { version: answered.version, message, at: clock() };
            s.nackCount++;
            s.held = req.versionInfo;
            log.warn('policy version rejected by sidecar (NACK); it keeps its previous version', {
              stream: s.id,
              service: o.service,
              instance: o.instanceId,
              version: answered.version,
              keeps: req.versionInfo,
              code: req.errorDetail.code,
              reason: message,
            });
            outcome = { kind: 'nack', version: answered.version, message };
          } else {
            s.held = req.versionInfo;
            // The sidecar moved on: a version it refused earlier may be offered again when it
            // becomes current again (a revert), and the sidecar may accept it by then (a secret
            // mounted meanwhile). Found in review: it was never offered again on this stream.
            s.nacked.length = 0;
            if (req.versionInfo !== answered.version) {
              log.warn('ACK names another version than the one sent', { stream: s.id, sent: answered.version, acked: req.versionInfo });
            } else {
              log.debug('policy version applied by sidecar (ACK)', { stream: s.id, service: o.service, instance: o.instanceId, version: answered.version });
            }
            outcome = { kind: 'ack', version: req.versionInfo };
          }
          maybePush(s);
          return outcome;
        },
        close() {
          if (s.closed) return;
          s.closed = true;
          count--;
          const set = byService.get(o.service);
          set?.delete(s);
          if (set?.size === 0) byService.delete(o.service);
          log.info('sidecar disconnected', { stream: s.id, service: o.service, instance: o.instanceId, version: s.held });
        },
      };
    },
    size: () => count,
    status(service) {
      const out: SidecarStatusWire[] = [];
      for (const [svc, set] of byService) {
        if (service !== undefined && service !== '' && svc !== service) continue;
        for (const s of set) {
          out.push({
            service: svc,
            instanceId: s.open.instanceId,
            subject: s.open.identity.subject,
            issuer: s.open.identity.issuer,
            peer: s.open.peer,
            ackedVersion: s.held,
            pendingVersion: s.pending?.version ?? '',
            lastNack: s.lastNack === null ? null : { version: s.lastNack.version, message: s.lastNack.message, atUnixMs: s.lastNack.at },
            nackCount: s.nackCount,
            connectedSinceUnixMs: s.connectedSince,
          });
        }
      }
      return out.sort((a, b) => cmp(a.service, b.service) || cmp(a.instanceId, b.instanceId) || a.connectedSinceUnixMs - b.connectedSinceUnixMs);
    },
    close() {
      unsubscribe();
    },
  };
}

/** The refusal of an oversized version_info, on the first request (server.ts) and on later ones. */
export const VERSION_INFO_TOO_LONG = `version_info is longer than ${MAX_VERSION_INFO} characters`;

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}\u2026`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
