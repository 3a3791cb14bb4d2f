/**
 * The messages between the primary and its workers (node:cluster IPC, structured clone). The
 * primary owns the policy watch and the admin port; a worker owns a full request path (listeners,
 * authenticator, verified-token cache, telemetry) and reports its state.
 */

/** What a worker reports; the primary's `/readyz` and `/status` are built from these. */
export interface WorkerState {
  /** Listeners up, policy applied, issuer keys loaded, not draining. */
  readonly ready: boolean;
  readonly draining: boolean;
  /** Version of the policy the worker enforces (null before the first one arrived). */
  readonly policyVersion: string | null;
  readonly ports: { readonly inbound: number; readonly tls: number | undefined; readonly outbound: number | undefined };
  /** The worker's own `/status` document (issuers, egress counters...). */
  readonly status: unknown;
}

export type ToWorker =
  /** The policy in force: its text (compiled by the worker with the same validator) and version. */
  | { readonly t: 'policy'; readonly text: string; readonly file: string; readonly version: string; readonly connected: boolean | null }
  /** Graceful shutdown: stop accepting, finish in-flight calls, exit. */
  | { readonly t: 'drain' }
  /** Prometheus text of the worker's metrics, answered with the same id. */
  | { readonly t: 'metrics'; readonly id: number }
  /** Browser sessions another worker ended (logout): session id and the end of its refusal (ms). */
  | { readonly t: 'sessions-ended'; readonly ended: readonly (readonly [string, number])[] }
  /** cluster/once.ts: run the task of `key` here (this worker claimed it first). */
  | { readonly t: 'once-run'; readonly key: string }
  /** cluster/once.ts: the result of `key`, run by another worker or kept. */
  | { readonly t: 'once-value'; readonly key: string; readonly value: unknown };

export type ToPrimary =
  /** A new worker asks for the current policy. */
  | { readonly t: 'hello' }
  | { readonly t: 'state'; readonly state: WorkerState }
  | { readonly t: 'metrics'; readonly id: number; readonly text: string | null }
  /** A browser session this worker ended: every other worker refuses it too. */
  | { readonly t: 'session-ended'; readonly id: string; readonly untilMs: number }
  /** cluster/once.ts: this worker wants the result of `key` (a browser-session refresh). */
  | { readonly t: 'once-claim'; readonly key: string }
  /** cluster/once.ts: the result of the task this worker ran. */
  | { readonly t: 'once-done'; readonly key: string; readonly value: unknown; readonly keepMs: number }
  /** cluster/once.ts: this worker no longer waits for `key` (nor runs it: the next waiter does). */
  | { readonly t: 'once-decline'; readonly key: string };

function isObject(m: unknown): m is Record<string, unknown> {
  return typeof m === 'object' && m !== null;
}

/** IPC carries only what we send, but a message is still checked before it is trusted. */
export function isToWorker(m: unknown): m is ToWorker {
  if (!isObject(m)) return false;
  switch (m['t']) {
    case 'policy':
      return typeof m['text'] === 'string' && typeof m['file'] === 'string' && typeof m['version'] === 'string';
    case 'drain':
      return true;
    case 'metrics':
      return typeof m['id'] === 'number';
    case 'sessions-ended':
      return Array.isArray(m['ended']) && (m['ended'] as unknown[]).every((e) => Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number');
    case 'once-run':
      return typeof m['key'] === 'string';
    case 'once-value':
      return typeof m['key'] === 'string' && 'value' in m;
    default:
      return false;
  }
}

export function isToPrimary(m: unknown): m is ToPrimary {
  if (!isObject(m)) return false;
  switch (m['t']) {
    case 'hello':
      return true;
    case 'state':
      return isWorkerState(m['state']);
    case 'metrics':
      return typeof m['id'] === 'number' && (m['text'] === null || typeof m['text'] === 'string');
    case 'session-ended':
      return typeof m['id'] === 'string' && typeof m['untilMs'] === 'number';
    case 'once-claim':
    case 'once-decline':
      return typeof m['key'] === 'string';
    case 'once-done':
      return typeof m['key'] === 'string' && 'value' in m && typeof m['keepMs'] === 'number' && Number.isFinite(m['keepMs']);
    default:
      return false;
  }
}

/** The fields of a state the primary reads (a malformed one threw in its message handler). */
function isWorkerState(v: unknown): v is WorkerState {
  if (!isObject(v)) return false;
  const ports = v['ports'];
  return (
    typeof v['ready'] === 'boolean' &&
    typeof v['draining'] === 'boolean' &&
    (v['policyVersion'] === null || typeof v['policyVersion'] === 'string') &&
    isObject(ports) &&
    typeof ports['inbound'] === 'number'
  );
}
