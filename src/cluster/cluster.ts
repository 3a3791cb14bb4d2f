import cluster, { type Worker } from 'node:cluster';
import { nativeRsa } from '../authn/native-verify.ts';
import { memoryReport } from '../admin/memory.ts';
import { startAdminServer } from '../admin/server.ts';
import type { SidecarConfig } from '../config/sidecar.ts';
import { telemetryEnabled } from '../config/telemetry.ts';
import type { Logger } from '../lib/log.ts';
import type { CompiledPolicy } from '../policy/model.ts';
import { isToPrimary, isToWorker, type ToPrimary, type ToWorker, type WorkerState } from './ipc.ts';
import { mergeExpositions } from './metrics.ts';
import { OnceBroker, OnceClient, type OnceResult, SWEEP_MS } from './once.ts';

/**
 * `concurrency: N` (N > 1): one sidecar as N worker processes sharing its listeners, like
 * Envoy's worker threads. Processes rather than threads because a Node isolate runs one thread;
 * node:cluster hands each accepted connection to the next worker in turn (round-robin in the
 * primary), so an HTTP/2 connection and all its streams stay on one worker.
 *
 * - The primary holds what must exist once: the policy watch (file or control-plane stream: one
 *   ACK/NACK, one entry in `ward status`) and the admin port. It sends each accepted policy's
 *   text to every worker, which compiles it with the same validator; a worker that starts (or
 *   restarts) later asks for the current one.
 * - Each worker holds a whole request path: listeners, authenticator with its own JWKS fetches
 *   and verified-token cache, upstream pool, egress listener and exchanged-token cache,
 *   telemetry (spans, decision records and metrics are exported per worker). Caches are per
 *   worker: memory bounds (`authn.cacheEntries`...) apply per worker, and a token new to a worker
 *   is verified once there.
 * - `/readyz` is ready only when every worker is ready and enforces the primary's policy
 *   version; `/status` lists the workers; `/metrics` merges theirs with a `worker` label.
 * - SIGTERM/SIGINT to the primary drains every worker (each stops accepting, finishes its calls
 *   up to drainTimeoutMs, exits), then the primary exits. A worker that dies is replaced.
 */

/** The policy watch as the primary runs it (a subset of the sidecar's provider). */
export interface PolicyHandle {
  readonly describe: string;
  current(): CompiledPolicy | null;
  lastError(): string | null;
  connected(): boolean | null;
  close(): Promise<void>;
}

/** A worker's sidecar, as `startSidecar` returns it. */
export interface SidecarHandle {
  readonly ports: { readonly inbound: number; readonly tls: number | undefined; readonly outbound: number | undefined };
  ready(): boolean;
  policyVersion(): string | null;
  status(): unknown;
  metricsText(): Promise<string> | null;
  stop(): Promise<void>;
}

export interface ClusterDeps {
  readonly cfg: Readonly<SidecarConfig>;
  readonly log: Logger;
  /** Primary: the policy watch; `onPolicy` gets every version in force with its source text. */
  startPolicy(onPolicy: (p: CompiledPolicy, text: string, file: string) => void): PolicyHandle;
  /**
   * Worker: a whole sidecar, without admin listener, its policy from `policy`, logging to `log`;
   * the browser sessions it ends and those the other workers end go through `sessions`.
   */
  startSidecar(policy: (onPolicy: (p: CompiledPolicy) => void) => PolicyHandle, log: Logger, sessions: SessionSync): Promise<SidecarHandle>;
  /** Worker: the validator and compiler the primary used. */
  compile(text: string, file: string): CompiledPolicy;
  /** Primary: resolves on SIGTERM/SIGINT. */
  untilShutdownSignal(): Promise<void>;
}

/** A worker's browser sessions (session/stage.ts): one ended (logout) is refused by every worker. */
export interface SessionSync {
  /** This worker ended a session: the others are told. */
  publish(id: string, untilMs: number): void;
  /** `onEnded` gets every session the other workers end (and those ended before it subscribed). */
  subscribe(onEnded: (id: string, untilMs: number) => void): void;
  /**
   * The value of `task` for `key`, run by one worker of the sidecar at a time, the others waiting
   * for its result (a session's refresh: cluster/once.ts). Rejects when no result came in time.
   */
  once(key: string, task: () => Promise<OnceResult>): Promise<unknown>;
}

/** How often a worker checks whether its state changed (readiness is at most this stale). */
const STATE_PERIOD_MS = 250;
/** A worker's full status is re-sent at least this often. */
const STATUS_PERIOD_MS = 2000;
/** Delay before a dead worker is replaced (a crash loop costs one fork per second, not a spin). */
const RESPAWN_DELAY_MS = 1000;
/** Extra time workers get after drainTimeoutMs to flush telemetry and exit. */
const EXIT_GRACE_MS = 5000;
const METRICS_TIMEOUT_MS = 2000;
/** Ended browser sessions the primary remembers for workers that start later (as session/stage.ts tracks). */
const MAX_ENDED_SESSIONS = 100_000;

/** This process is the cluster's primary (not one of its workers). */
export function isPrimary(): boolean {
  return cluster.isPrimary;
}

export function runCluster(d: ClusterDeps): Promise<number> {
  return cluster.isPrimary ? runPrimary(d) : runWorker(d);
}

// ---- primary

interface Slot {
  readonly slot: number;
  worker: Worker | null;
  state: WorkerState | null;
  /** Set once its listeners are up: a worker that dies before that fails the start-up. */
  started: boolean;
}

async function runPrimary(d: ClusterDeps): Promise<number> {
  const { cfg } = d;
  const log = d.log.child({ role: 'primary' });
  const shutdown = d.untilShutdownSignal(); // before starting: a signal during start-up drains
  const n = cfg.concurrency;
  let draining = false;
  let latest: Extract<ToWorker, { t: 'policy' }> | null = null;
  const slots: Slot[] = Array.from({ length: n }, (_, i) => ({ slot: i + 1, worker: null, state: null, started: false }));
  const pendingMetrics = new Map<number, (text: string | null) => void>();
  let nextMetricsId = 0;
  let startupFailure: ((err: Error) => void) | null = null;
  let policy: PolicyHandle | null = null;
  /** Browser sessions a worker ended -> until when they are refused (ms). */
  const ended = new Map<string, number>();
  /** Tasks one worker runs for all (session refreshes). */
  const shared = new OnceBroker<Worker>(
    (w, key) => send(w, { t: 'once-run', key }),
    (w, key, value) => send(w, { t: 'once-value', key, value }),
  );
  setInterval(() => shared.sweep(), SWEEP_MS).unref();

  const send = (w: Worker, m: ToWorker): void => {
    if (w.isConnected()) w.send(m);
  };

  const onPolicy = (p: CompiledPolicy, text: string, file: string): void => {
    latest = { t: 'policy', text, file, version: p.version, connected: policy?.connected() ?? null };
    for (const s of slots) if (s.worker !== null) send(s.worker, latest);
  };
  policy = d.startPolicy(onPolicy);

  const fork = (s: Slot): void => {
    const w = cluster.fork();
    s.worker = w;
    s.state = null;
    w.on('message', (m: unknown) => {
      if (!isToPrimary(m)) return;
      onMessage(s, w, m);
    });
    w.on('exit', (code, signal) => {
      shared.gone(w);
      if (s.worker === w) {
        s.worker = null;
        s.state = null;
      }
      if (draining) return;
      if (!s.started) {
        startupFailure?.(new Error(`worker ${s.slot} exited during start-up (code ${code}, signal ${signal})`));
        return;
      }
      log.error('worker died; replacing it', { worker: s.slot, pid: w.process.pid, code, signal });
      setTimeout(() => {
        if (!draining && s.worker === null) fork(s);
      }, RESPAWN_DELAY_MS).unref();
    });
  };

  const onMessage = (s: Slot, w: Worker, m: ToPrimary): void => {
    switch (m.t) {
      case 'hello':
        if (latest !== null) send(w, latest);
        if (ended.size > 0) send(w, { t: 'sessions-ended', ended: [...ended] }); // a replacement worker too
        break;
      case 'session-ended': {
        // A logout is the sidecar's, not one worker's (found in review: the cookie still worked on
        // every other connection). Kept for workers that start later, bounded, oldest out first.
        const now = Date.now();
        for (const [id, until] of ended) if (until <= now) ended.delete(id);
        if (m.untilMs <= now) break;
        ended.set(m.id, m.untilMs);
        if (ended.size > MAX_ENDED_SESSIONS) ended.delete(ended.keys().next().value as string);
        for (const o of slots) if (o.worker !== null && o.worker !== w) send(o.worker, { t: 'sessions-ended', ended: [[m.id, m.untilMs]] });
        break;
      }
      case 'once-claim':
        shared.claim(w, m.key);
        break;
      case 'once-done':
        shared.done(w, m.key, { value: m.value, keepMs: m.keepMs });
        break;
      case 'once-decline':
        shared.decline(w, m.key);
        break;
      case 'state':
        if (s.worker === w) s.state = m.state;
        if (m.state.ports.inbound > 0) s.started = true;
        break;
      case 'metrics':
        pendingMetrics.get(m.id)?.(m.text);
        break;
    }
  };

  const stopWorkers = async (deadlineMs: number): Promise<void> => {
    const exits: Promise<void>[] = [];
    for (const s of slots) {
      const w = s.worker;
      if (w === null || w.isDead()) continue;
      exits.push(new Promise<void>((resolve) => w.once('exit', () => resolve())));
      send(w, { t: 'drain' });
    }
    const timer = setTimeout(() => {
      for (const s of slots) if (s.worker !== null && !s.worker.isDead()) s.worker.process.kill('SIGKILL');
    }, deadlineMs);
    await Promise.all(exits);
    clearTimeout(timer);
  };

  // Start every worker; start-up succeeds once each has its listeners up. A signal during
  // start-up ends it the same way as a failure, then the primary exits 0 (found in review: it
  // waited for a start-up that might never come).
  let signalled = false;
  void shutdown.then(() => {
    signalled = true;
    startupFailure?.(new Error('stopped during start-up'));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      startupFailure = reject;
      for (const s of slots) fork(s);
      const poll = setInterval(() => {
        if (slots.every((s) => s.started)) {
          clearInterval(poll);
          resolve();
        }
      }, 20);
      startupFailure = (err) => {
        clearInterval(poll);
        reject(err);
      };
    });
  } catch (err) {
    draining = true;
    await stopWorkers(EXIT_GRACE_MS);
    await policy.close();
    if (signalled) {
      log.info('stopped during start-up');
      return 0;
    }
    throw err;
  }
  startupFailure = null;

  const workersView = (): unknown[] =>
    slots.map((s) => ({
      worker: s.slot,
      pid: s.worker?.process.pid ?? null,
      ready: s.state?.ready ?? false,
      draining: s.state?.draining ?? false,
      policyVersion: s.state?.policyVersion ?? null,
    }));
  const current = (): CompiledPolicy | null => policy.current();
  const allReady = (): boolean => {
    const v = current()?.version ?? null;
    return v !== null && slots.every((s) => s.state !== null && s.state.ready && s.state.policyVersion === v);
  };

  const metricsOf = (w: Worker): Promise<string | null> =>
    new Promise((resolve) => {
      const id = ++nextMetricsId;
      const timer = setTimeout(() => {
        pendingMetrics.delete(id);
        resolve(null);
      }, METRICS_TIMEOUT_MS);
      pendingMetrics.set(id, (text) => {
        clearTimeout(timer);
        pendingMetrics.delete(id);
        resolve(text);
      });
      send(w, { t: 'metrics', id });
    });

  const admin = await startAdminServer({
    host: cfg.admin.host,
    port: cfg.admin.port,
    checks: [
      { name: 'policy', check: () => ({ ok: current() !== null, detail: current()?.version ?? null }) },
      { name: 'workers', check: () => ({ ok: allReady(), detail: workersView() }) },
      { name: 'listeners', check: () => ({ ok: !draining }) },
    ],
    documents: {
      '/status': () => ({
        service: cfg.service,
        concurrency: n,
        policyVersion: current()?.version ?? null,
        policySource: policy.describe,
        policyError: policy.lastError(),
        controlPlaneConnected: policy.connected(),
        // Every worker loads the same addon under the same environment as this process.
        signatures: nativeRsa.report(),
        draining,
        workers: slots.map((s) => ({ worker: s.slot, pid: s.worker?.process.pid ?? null, ...(s.state ?? {}) })),
      }),
      // The primary's own; each worker's memory is in /metrics (`process_memory_usage{worker=...}`).
      '/memory': memoryReport,
    },
    // As at concurrency 1, `/metrics` is there only with telemetry on (404 otherwise).
    ...(telemetryEnabled(cfg.telemetry)
      ? {
          texts: {
            '/metrics': {
              contentType: 'text/plain; version=0.0.4; charset=utf-8',
              render: async () => {
                const parts = await Promise.all(
                  slots.map(async (s) => ({ worker: String(s.slot), text: s.worker === null ? null : await metricsOf(s.worker) })),
                );
                return mergeExpositions(parts.filter((p): p is { worker: string; text: string } => p.text !== null));
              },
            },
          },
        }
      : {}),
  });

  const ports = slots[0]?.state?.ports;
  log.info('sidecar started', {
    service: cfg.service,
    concurrency: n,
    workers: slots.map((s) => s.worker?.process.pid ?? null),
    inbound: ports?.inbound ?? null,
    tls: ports?.tls ?? null,
    outbound: ports?.outbound ?? null,
    admin: admin.port,
    upstream: cfg.upstream.url,
    policy: policy.describe,
    policyVersion: current()?.version ?? null,
  });

  await shutdown;
  draining = true;
  log.info('draining', { deadlineMs: cfg.drainTimeoutMs, workers: n });
  await stopWorkers(cfg.drainTimeoutMs + EXIT_GRACE_MS);
  await policy.close();
  await admin.close();
  log.info('stopped');
  return 0;
}

// ---- worker

async function runWorker(d: ClusterDeps): Promise<number> {
  const log = d.log.child({ worker: cluster.worker?.id ?? 0 });
  let current: CompiledPolicy | null = null;
  let connected: boolean | null = null;
  let lastError: string | null = null;
  let subscriber: ((p: CompiledPolicy) => void) | null = null;
  let sidecar: SidecarHandle | null = null;
  let stopping: Promise<void> | null = null;
  let draining = false;

  const send = (m: ToPrimary): void => {
    if (process.connected) process.send?.(m);
  };

  /** Sessions other workers ended, held until the session stage subscribes. */
  let endedBefore: (readonly [string, number])[] | null = [];
  let onEndedElsewhere: ((id: string, untilMs: number) => void) | null = null;
  const onceClient = new OnceClient(
    {
      claim: (key) => send({ t: 'once-claim', key }),
      done: (key, r) => send({ t: 'once-done', key, value: r.value, keepMs: r.keepMs }),
      decline: (key) => send({ t: 'once-decline', key }),
    },
    () => process.connected,
  );
  const sessions: SessionSync = {
    once: (key, task) => onceClient.once(key, task),
    publish: (id, untilMs) => send({ t: 'session-ended', id, untilMs }),
    subscribe: (cb) => {
      onEndedElsewhere = cb;
      for (const [id, until] of endedBefore ?? []) cb(id, until);
      endedBefore = null;
    },
  };

  const handle: PolicyHandle = {
    describe: 'the primary process',
    current: () => current,
    lastError: () => lastError,
    connected: () => connected,
    close: async () => {},
  };

  const apply = (m: Extract<ToWorker, { t: 'policy' }>): void => {
    connected = m.connected;
    // Compiled again even when the version is the one in force: a rotated hmacSecretFile swaps
    // the policy with its text, and so its version, unchanged; the file is read here, as the
    // primary just did (found in review: workers kept the old secret). The primary sends only on
    // a swap and to a worker that starts.
    let p: CompiledPolicy;
    try {
      p = d.compile(m.text, m.file);
    } catch (err) {
      // The primary accepted it with the same validator, so this is a bug, not bad input: keep
      // the last good version (fail closed when there is none) and say so.
      lastError = (err as Error).message;
      log.error('policy from the primary does not compile here; keeping the last good version', { version: m.version, err });
      return;
    }
    current = p;
    lastError = null;
    log.info('policy applied', { version: p.version });
    subscriber?.(p);
  };

  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => (done = resolve));

  const stop = (why: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('draining', { reason: why });
      draining = true;
      push(true);
      await sidecar?.stop();
      clearInterval(timer);
      process.off('message', onMessage);
      if (process.connected) process.disconnect();
      done();
    })();
    return stopping;
  };

  const onMessage = (m: unknown): void => {
    if (!isToWorker(m)) return;
    switch (m.t) {
      case 'policy':
        apply(m);
        break;
      case 'drain':
        void stop('primary');
        break;
      case 'once-run':
        onceClient.onRun(m.key);
        break;
      case 'once-value':
        onceClient.onValue(m.key, m.value);
        break;
      case 'sessions-ended':
        for (const [id, until] of m.ended) {
          if (onEndedElsewhere !== null) onEndedElsewhere(id, until);
          else endedBefore?.push([id, until]);
        }
        break;
      case 'metrics': {
        const text = sidecar?.metricsText() ?? null;
        if (text === null) send({ t: 'metrics', id: m.id, text: null });
        else text.then((t) => send({ t: 'metrics', id: m.id, text: t }), () => send({ t: 'metrics', id: m.id, text: null }));
        break;
      }
    }
  };
  process.on('message', onMessage);
  // The primary orchestrates shutdown; a signal sent to the worker itself (or to the whole
  // process group, Ctrl-C) drains it the same way, and so does losing the primary.
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('disconnect', () => void stop('primary gone'));
  send({ t: 'hello' });

  let lastKey = '';
  let lastFull = 0;
  function push(force = false): void {
    if (sidecar === null) return;
    const ready = !draining && sidecar.ready();
    const policyVersion = sidecar.policyVersion();
    const key = `${ready}|${draining}|${policyVersion}`;
    const now = Date.now();
    if (!force && key === lastKey && now - lastFull < STATUS_PERIOD_MS) return;
    lastKey = key;
    lastFull = now;
    const { inbound, tls, outbound } = sidecar.ports;
    send({ t: 'state', state: { ready, draining, policyVersion, ports: { inbound, tls, outbound }, status: sidecar.status() } });
  }
  const timer = setInterval(() => push(), STATE_PERIOD_MS);
  timer.unref();

  try {
    sidecar = await d.startSidecar((onPolicy) => {
      subscriber = onPolicy;
      if (current !== null) onPolicy(current);
      return handle;
    }, log, sessions);
  } catch (err) {
    // The primary learns of it from this worker's exit (a start-up failure, docs/performance.md),
    // which the IPC channel would otherwise hold off for ever (found in review).
    log.error('worker start-up failed', { err });
    clearInterval(timer);
    process.off('message', onMessage);
    process.removeAllListeners('disconnect');
    if (process.connected) process.disconnect();
    return 1;
  }
  push(true);
  await finished;
  return 0;
}
