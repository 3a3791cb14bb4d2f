import { ConfigError, formatIssue } from '../../errors/ward-error.ts';
import { GrpcStatus } from '../../errors/table.ts';
import type { CaSource } from '../../h2/conn.ts';
import { GrpcStream } from '../../h2/grpc-stream.ts';
import { watchFileSet } from '../../lib/file-watch.ts';
import type { Logger } from '../../lib/log.ts';
import { changedReferences, referencesOf } from '../../policy/compile.ts';
import { isOtherServiceError } from '../../policy/load.ts';
import type { CompiledPolicy } from '../../policy/model.ts';
import { SERVICE_NAME } from '../../policy/schema.ts';
import {
  decodePolicyResponse,
  encodePolicyRequest,
  MAX_NACK_MESSAGE,
  MAX_POLICY_RESPONSE_BYTES,
  POLICY_STREAM_PATH,
  type PolicyRequestWire,
  type PolicyResponseWire,
  RpcCode,
} from '../wire.ts';
import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF } from '../../lib/backoff.ts';
import { ensureStateDir, type PersistedPolicy, readPersistedPolicy, writePersistedPolicy } from './state.ts';

/**
 * The sidecar's side of the policy stream (linkerd's policy client, Envoy's xDS subscription):
 * it holds the last good policy of one service and replaces it only with a version that
 * compiles with ward's own validator and names the same service.
 *
 * - Start: the last accepted version is restored from `stateDir` (if it still compiles), so a
 *   restart while the control plane is down enforces it; `onPolicy` is called with it before
 *   `createPolicyWatch` returns.
 * - Connect: announces the version it holds; the control plane only answers with a different one.
 * - Push: compile -> swap -> `onPolicy` -> persist -> ACK; or NACK with the errors, keeping the old one.
 * - Stream ends for any reason: reconnect with jittered exponential backoff (a fresh token each
 *   time). The policy in force never changes because of a disconnect.
 * - Files the policy references (`hmacSecretFile`) are read here, on the sidecar, when it
 *   compiles a version: the control plane sends only the text and never holds the secrets
 *   (controlplane/server/validate.ts). So the sidecar also watches the referenced files of the
 *   version in force (lib/file-watch.ts) and, when one changes (a rotated secret), compiles the
 *   same text again and swaps it in: same version, nothing to ACK or persist, logged as
 *   `policy updated` with `reason: referenced file changed`. A new secret that does not compile
 *   (unreadable, too short) is refused: the policy with the previous secret stays and
 *   `lastError()` says why until the file is good again, as policy/source.ts does for a file.
 * - A pushed version that does not compile here is NACKed, and the control plane does not offer
 *   it again on that stream until the sidecar ACKs another version (then it does when it becomes
 *   current again: a revert). What failed may be on the sidecar's side (a secret file not mounted
 *   yet, or not readable): while such a version is the one refused, the watch compiles its text
 *   again every `pollMs`, and once it compiles, opens a new stream, on which the control plane
 *   pushes it again (found in review: the sidecar kept its old version until the next version
 *   or a reconnect, which a healthy stream never makes). Once another version is applied the
 *   retry stops: the control plane itself offers the refused one again if it comes back.
 * - Start checks the restored text against the version it was saved with (`localVersion`); on a
 *   mismatch the text stays in force but no version is announced, so the control plane pushes.
 */

export interface PolicyWatchOptions {
  /** `host:port` of the control plane. */
  readonly address: string;
  readonly service: string;
  /** Shown in `ward status` (pod name, host:pid...). */
  readonly instanceId: string;
  /** A current access token for the control plane's audience; called on every (re)connect. */
  readonly token: () => Promise<string>;
  readonly stateDir: string;
  /** The policy validator (policy/load.ts `parsePolicyText`): throws ConfigError when invalid. */
  readonly compile: (text: string, file: string) => CompiledPolicy;
  /** Called with each newly applied policy (also the restored one). Must not throw; if it does, it is logged. */
  readonly onPolicy: (p: CompiledPolicy) => void;
  readonly log: Logger;
  /** TLS to the control plane; `ca`: PEM of the CAs to trust (or a function read at each connection), null for the system roots. Default: cleartext (h2c). */
  readonly tls?: { readonly ca: CaSource };
  readonly backoff?: BackoffPolicy;
  /** After this long connected, the backoff starts again from its first step. */
  readonly healthyAfterMs?: number;
  /** Injected for tests. */
  readonly timers?: { setTimeout(fn: () => void, ms: number): unknown; clearTimeout(handle: unknown): void };
  readonly random?: () => number;
  /** Stat-poll period of the files the policy in force references (default 2000 ms). */
  readonly pollMs?: number;
  /** Quiet time before a changed referenced file is read (default 100 ms). */
  readonly debounceMs?: number;
  /** Use fs.watch on the referenced files' directories (default true); false leaves the stat poll. */
  readonly watch?: boolean;
}

export interface PolicyWatch {
  /** The policy in force, or null (fail closed) before any version was accepted. */
  current(): CompiledPolicy | null;
  /** The control plane's version_info of the policy in force ("" when none). */
  versionInfo(): string;
  /** Whether the stream is open and authorized right now. */
  connected(): boolean;
  /**
   * A referenced file of the policy in force that cannot be used (it stays in force with the file's
   * previous content), else the last refused version's reason or the last connection failure;
   * null when none since the last success.
   */
  lastError(): string | null;
  close(): Promise<void>;
}

type Call = GrpcStream;

/** Keepalive PINGs on the stream (what the grpc-js channel was configured with). */
const KEEPALIVE = { intervalMs: 30_000, timeoutMs: 10_000 } as const;
const CONNECT_TIMEOUT_MS = 10_000;

const realTimers = {
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (h: unknown): void => clearTimeout(h as NodeJS.Timeout),
};

export function createPolicyWatch(opts: PolicyWatchOptions): PolicyWatch {
  const { service, log } = opts;
  const timers = opts.timers ?? realTimers;
  const random = opts.random ?? Math.random;
  const backoff = opts.backoff ?? DEFAULT_BACKOFF;
  const healthyAfterMs = opts.healthyAfterMs ?? 10_000;

  let current: CompiledPolicy | null = null;
  let accepted: PersistedPolicy | null = null;
  let isConnected = false;
  let lastError: string | null = null;
  let closed = false;
  let attempt = 0;
  let call: Call | null = null;
  let retryTimer: unknown = null;
  let healthyTimer: unknown = null;
  let persisting: Promise<void> = Promise.resolve();
  /** Why the latest change of a referenced file was refused; null when it was not. */
  let referenceError: string | null = null;
  /** The text of the last version refused because it did not compile here, and its retry timer. */
  let refused: { readonly text: string; readonly fileName: string; readonly versionInfo: string } | null = null;
  let refusedTimer: unknown = null;
  /** While a saved policy that did not compile at start is tried again; and why it last failed. */
  let restoreTimer: unknown = null;
  let restoreError: string | null = null;

  // The service names a file in stateDir: only well-formed names (as the policy schema allows).
  if (!SERVICE_NAME.test(service)) throw new Error(`invalid service name '${service}'`);
  ensureStateDir(opts.stateDir);
  const referenced = watchFileSet([], {
    log,
    onChange: () => referencedFileChanged(),
    pollMs: opts.pollMs ?? 2000,
    debounceMs: opts.debounceMs ?? 100,
    watch: opts.watch !== false,
  });
  restore();

  function restore(): void {
    let saved: PersistedPolicy | null;
    try {
      saved = readPersistedPolicy(opts.stateDir, service);
    } catch (err) {
      log.warn('ignoring unreadable policy state', { stateDir: opts.stateDir, err });
      return;
    }
    if (saved === null) return;
    try {
      const p = opts.compile(saved.text, saved.fileName);
      if (p.service !== service || saved.service !== service) throw new Error(`the saved policy is for service '${p.service}'`);
      current = p;
      // The version announced on connect must name the text enforced, or the control plane,
      // seeing its current version, never corrects it (found in review: a state file whose text
      // was not its version's was enforced for ever). The check is against the version this
      // build computed when it accepted the text, not the control plane's version_info, which a
      // control plane on another ward build may name otherwise. A file from before `localVersion`
      // is checked against version_info: a difference there may be only another build's, and
      // costs one push. A mismatch keeps the text in force (a restart while the control plane is
      // down still has a policy) but announces no version, so the control plane sends its own.
      const expected = saved.localVersion ?? saved.versionInfo;
      if (p.version === expected) accepted = saved;
      else {
        accepted = { ...saved, versionInfo: '' };
        log.warn('restored policy does not match its saved version; enforcing it until the control plane sends its version', {
          version: saved.versionInfo,
          saved: expected,
          local: p.version,
          file: saved.fileName,
        });
      }
      referenced.set(referencesOf(p).map((r) => r.file));
      log.info('policy restored from state directory', { version: accepted.versionInfo, file: saved.fileName });
      deliver(p);
    } catch (err) {
      // A saved version that does not compile here is not enforced. What failed may be a file it
      // references that is not there yet (a secret mounted after the sidecar started): while no
      // policy is in force, it is tried again every `pollMs`, so a restart with the control
      // plane down still ends up enforcing it (found in review: it waited for the control plane).
      // Another service's, or a text this build cannot read (a downgrade), fails the same way each
      // time, for nothing but a compile every `pollMs`; logged once per distinct reason.
      const reason = describe(err);
      if (reason !== restoreError) log.warn('saved policy does not compile; trying again while no policy is in force', { version: saved.versionInfo, reason });
      restoreError = reason;
      if (!closed && current === null) restoreTimer = timers.setTimeout(restoreAgain, opts.pollMs ?? 2000);
    }
  }

  function restoreAgain(): void {
    restoreTimer = null;
    if (closed || current !== null) return; // the control plane sent a policy meanwhile
    restore();
  }

  /** A file the policy in force references may have changed: compile the same text again. */
  function referencedFileChanged(): void {
    const held = current;
    const saved = accepted;
    if (closed || held === null || saved === null) return;
    let p: CompiledPolicy;
    try {
      p = opts.compile(saved.text, saved.fileName);
    } catch (err) {
      const reason = `version ${saved.versionInfo}, a referenced file changed: ${describe(err)}`;
      // Refused like a bad version (the one in force stays); logged once per distinct reason.
      if (reason !== referenceError) log.error('policy update refused; keeping the last good version', { version: saved.versionInfo, reason: describe(err) });
      referenceError = reason;
      return;
    }
    referenceError = null;
    const changed = changedReferences(held, p);
    if (changed.length === 0) return;
    current = p;
    // The version is the control plane's name of the text, which did not change.
    log.info('policy updated', { version: saved.versionInfo, reason: 'referenced file changed', referencedFiles: changed, file: saved.fileName });
    deliver(p);
  }

  function deliver(p: CompiledPolicy): void {
    try {
      opts.onPolicy(p);
    } catch (err) {
      log.error('onPolicy failed', { version: p.version, err });
    }
  }

  function connect(): void {
    retryTimer = null;
    if (closed) return;
    opts.token().then(
      (token) => {
        if (!closed) open(token);
      },
      (err: unknown) => {
        lastError = `cannot get a token for the control plane: ${describe(err)}`;
        log.warn('cannot get a token for the control plane', { reason: describe(err) });
        retry();
      },
    );
  }

  function open(token: string): void {
    let c: Call | null = null;
    const events = {
      onHeaders: (): void => {
        // The server sends headers only once the stream is authorized.
        if (call !== c) return;
        isConnected = true;
        lastError = null;
        log.info('connected to control plane', { address: opts.address, version: accepted?.versionInfo ?? '' });
        healthyTimer = timers.setTimeout(() => {
          healthyTimer = null;
          attempt = 0;
        }, healthyAfterMs);
      },
      onMessage: (message: Buffer): void => {
        if (call !== c || c === null) return;
        let resp: PolicyResponseWire;
        try {
          resp = decodePolicyResponse(message);
        } catch (err) {
          // As grpc-js does with a response it cannot parse: the call ends (INTERNAL) and is made
          // again. Reported first, so the cancel's own end (CANCELLED) finds the call replaced.
          ended(c, GrpcStatus.INTERNAL, `unparsable response: ${describe(err)}`);
          c.cancel();
          return;
        }
        onResponse(c, resp);
      },
      onEnd: (code: number, details: string): void => {
        if (c !== null) ended(c, code, details);
      },
    };
    try {
      c = new GrpcStream(
        {
          address: opts.address,
          ...(opts.tls === undefined ? {} : { tls: opts.tls }),
          path: POLICY_STREAM_PATH,
          headers: ['authorization', `Bearer ${token}`],
          connectTimeoutMs: CONNECT_TIMEOUT_MS,
          keepalive: KEEPALIVE,
          maxMessageBytes: MAX_POLICY_RESPONSE_BYTES,
        },
        events,
      );
    } catch (err) {
      lastError = `cannot open the control plane stream: ${describe(err)}`;
      log.error('cannot open the control plane stream', { address: opts.address, reason: describe(err) });
      retry();
      return;
    }
    call = c;
    send(c, { service, instanceId: opts.instanceId, versionInfo: accepted?.versionInfo ?? '', responseNonce: '', errorDetail: null });
  }

  /** The stream `c` is over (status `code`): reconnect, unless it was replaced or the watch closed. */
  function ended(c: Call, code: number, details: string): void {
    if (call !== c) return;
    call = null;
    const wasConnected = isConnected;
    isConnected = false;
    if (healthyTimer !== null) {
      timers.clearTimeout(healthyTimer);
      healthyTimer = null;
    }
    if (closed) return;
    const name = STATUS_NAMES[code] ?? String(code);
    lastError = `control plane stream ended: ${name} ${details}`;
    const level = code === GrpcStatus.UNAUTHENTICATED || code === GrpcStatus.PERMISSION_DENIED ? 'error' : 'warn';
    log[level]('control plane stream ended; the current policy stays in force', {
      address: opts.address,
      code: name,
      details,
      wasConnected,
      version: accepted?.versionInfo ?? null,
    });
    retry();
  }

  function retry(): void {
    if (closed) return;
    const delay = backoffDelay(attempt, backoff, random);
    attempt++;
    log.debug('reconnecting to control plane', { inMs: delay, attempt });
    retryTimer = timers.setTimeout(connect, delay);
  }

  /** Compiles the refused version's text again every `pollMs` (none: stop); once it compiles, asks for it on a new stream. */
  function retryRefused(r: typeof refused): void {
    refused = r;
    if (refusedTimer !== null) timers.clearTimeout(refusedTimer);
    refusedTimer = null;
    if (r === null || closed) return;
    const again = (): void => {
      refusedTimer = null;
      if (closed || refused !== r) return;
      try {
        opts.compile(r.text, r.fileName);
      } catch {
        refusedTimer = timers.setTimeout(again, opts.pollMs ?? 2000);
        return;
      }
      refused = null;
      log.info('a refused policy version compiles now; asking the control plane for it again', { version: r.versionInfo });
      const c = call;
      if (c === null) return; // not connected: the next stream asks for it anyway
      call = null;
      isConnected = false;
      if (healthyTimer !== null) {
        timers.clearTimeout(healthyTimer);
        healthyTimer = null;
      }
      c.cancel();
      connect();
    };
    refusedTimer = timers.setTimeout(again, opts.pollMs ?? 2000);
  }

  function send(c: Call, req: PolicyRequestWire): void {
    c.write(encodePolicyRequest(req));
  }

  function nack(c: Call, resp: PolicyResponseWire, code: number, reason: string): void {
    lastError = `refused version ${resp.versionInfo}: ${reason}`;
    log.error('policy version refused (NACK); the previous version stays in force', {
      version: resp.versionInfo,
      keeps: accepted?.versionInfo ?? null,
      reason,
    });
    send(c, {
      service,
      instanceId: opts.instanceId,
      versionInfo: accepted?.versionInfo ?? '',
      responseNonce: resp.nonce,
      errorDetail: { code, message: reason.length <= MAX_NACK_MESSAGE ? reason : `${reason.slice(0, MAX_NACK_MESSAGE - 1)}\u2026` },
    });
  }

  function onResponse(c: Call, resp: PolicyResponseWire): void {
    if (resp.service !== service) return nack(c, resp, RpcCode.FAILED_PRECONDITION, `response is for service '${resp.service}', this sidecar serves '${service}'`);
    if (resp.policy === null) return nack(c, resp, RpcCode.INVALID_ARGUMENT, 'response carries no policy');
    let p: CompiledPolicy;
    try {
      p = opts.compile(resp.policy.text, resp.policy.fileName);
    } catch (err) {
      // A text for another service is refused by the validator with the rest, but its NACK says
      // so (FAILED_PRECONDITION, docs/control-plane.md; found in review: it was INVALID_ARGUMENT),
      // and no retry can make it compile here.
      if (isOtherServiceError(err)) return nack(c, resp, RpcCode.FAILED_PRECONDITION, describe(err));
      retryRefused({ text: resp.policy.text, fileName: resp.policy.fileName, versionInfo: resp.versionInfo });
      return nack(c, resp, RpcCode.INVALID_ARGUMENT, describe(err));
    }
    retryRefused(null);
    if (p.service !== service) return nack(c, resp, RpcCode.FAILED_PRECONDITION, `${resp.policy.fileName}: policy is for service '${p.service}', this sidecar serves '${service}'`);
    if (p.version !== resp.versionInfo) {
      // Same file, different version: the control plane runs another ward build whose canonical
      // form differs. The content is what counts; the protocol keeps the server's version.
      log.warn('policy version computed here differs from the control plane\'s', { controlPlane: resp.versionInfo, local: p.version });
    }
    const previous = accepted?.versionInfo ?? null;
    current = p;
    accepted = { service, versionInfo: resp.versionInfo, fileName: resp.policy.fileName, text: resp.policy.text, acceptedAt: Date.now(), localVersion: p.version };
    lastError = null;
    referenceError = null;
    referenced.set(referencesOf(p).map((r) => r.file));
    log.info('policy version applied', { version: resp.versionInfo, previous, file: resp.policy.fileName, controlPlane: resp.controlPlaneId });
    deliver(p);
    const toSave = accepted;
    persisting = persisting
      .then(() => writePersistedPolicy(opts.stateDir, toSave))
      .catch((err: unknown) => log.error('cannot persist the policy; a restart without the control plane would start without it', { stateDir: opts.stateDir, err }));
    send(c, { service, instanceId: opts.instanceId, versionInfo: resp.versionInfo, responseNonce: resp.nonce, errorDetail: null });
  }

  connect();

  return {
    current: () => current,
    versionInfo: () => accepted?.versionInfo ?? '',
    connected: () => isConnected,
    lastError: () => referenceError ?? lastError,
    async close() {
      if (closed) return;
      closed = true;
      referenced.close();
      if (retryTimer !== null) timers.clearTimeout(retryTimer);
      if (refusedTimer !== null) timers.clearTimeout(refusedTimer);
      if (restoreTimer !== null) timers.clearTimeout(restoreTimer);
      if (healthyTimer !== null) timers.clearTimeout(healthyTimer);
      isConnected = false;
      const c = call;
      call = null;
      c?.cancel();
      await persisting;
    },
  };
}

function describe(err: unknown): string {
  if (err instanceof ConfigError) return err.issues.map(formatIssue).join('\n');
  if (err instanceof Error) return err.message;
  return String(err);
}

/** gRPC status names (the canonical codes), as grpc-js's `status` enum gave them to the log and `lastError`. */
const STATUS_NAMES: readonly string[] = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
];
