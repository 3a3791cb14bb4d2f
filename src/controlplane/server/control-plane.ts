import { type Clock, systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { type Authenticate, compileBindings } from './access.ts';
import type { ControlPlaneConfig } from './config.ts';
import { createDecisionStore, type DecisionStore } from './decisions/store.ts';
import { createDecisionService } from './decisions/service.ts';
import { DEFAULT_TELEMETRY_RECEIVER, type TelemetryReceiverConfig } from './otlp/config.ts';
import { createForwarder, type Forwarder } from './otlp/forward.ts';
import { createOtlpReceiver, type OtlpReceiver } from './otlp/receiver.ts';
import { startControlPlaneServer } from './server.ts';
import { createPolicyStore, type PolicyParser, type PolicyStore } from './store.ts';
import { servingCertificate } from './tls.ts';

/** How often the serving certificate's files are checked for a rotation. */
const CERT_POLL_MS = 10_000;

/**
 * A control plane from its config: the policy store (first scan done before the port opens, so
 * the first sidecar already gets a policy) and the gRPC server. `ward control-plane` and the
 * integration tests start it the same way; the validator and the authenticator are passed in.
 */
export interface RunningControlPlane {
  readonly port: number;
  /** The cleartext health listener's port (`health`), if configured. */
  readonly healthPort: number | undefined;
  readonly store: PolicyStore;
  /** Recent decisions received over OTLP (null when the receiver is off). */
  readonly decisions: DecisionStore | null;
  readonly otlp: { readonly receiver: OtlpReceiver; readonly forwarder: Forwarder | null } | null;
  streams(): number;
  close(): Promise<void>;
}

export async function startControlPlane(
  cfg: Readonly<ControlPlaneConfig>,
  deps: {
    readonly log: Logger;
    readonly parse: PolicyParser;
    readonly authenticator: Authenticate;
    readonly clock?: Clock;
    readonly watch?: boolean;
    /** The OTLP receiver, decision store and forwarding (default: receiver on, no forwarding). */
    readonly telemetry?: TelemetryReceiverConfig;
    /** How often the TLS certificate's files are polled for a rotation (default 10 s). */
    readonly certPollMs?: number;
  },
): Promise<RunningControlPlane> {
  const clock = deps.clock ?? systemClock;
  const serving = cfg.tls === undefined ? null : servingCertificate({ baseDir: cfg.baseDir, ...cfg.tls, locator: cfg.locator, log: deps.log, pollMs: deps.certPollMs ?? CERT_POLL_MS });
  const credentials = serving?.credentials;
  let store: PolicyStore;
  try {
    store = await createPolicyStore({
      dir: cfg.policyDir,
      locator: cfg.locator,
      parse: deps.parse,
      log: deps.log.child({ component: 'store' }),
      clock,
      debounceMs: cfg.watch.debounceMs,
      pollIntervalMs: cfg.watch.pollIntervalMs,
      maxFileBytes: cfg.watch.maxFileBytes,
      ...(deps.watch === undefined ? {} : { watch: deps.watch }),
    });
  } catch (err) {
    serving?.close();
    throw err;
  }
  const tcfg = deps.telemetry ?? DEFAULT_TELEMETRY_RECEIVER;
  const bindings = compileBindings(cfg.bindings);
  let telemetry: { store: DecisionStore; receiver: OtlpReceiver; forwarder: Forwarder | null; decisions: ReturnType<typeof createDecisionService> } | null = null;
  if (tcfg.enabled) {
    const tlog = deps.log.child({ component: 'telemetry' });
    const decisionStore = createDecisionStore({ capacity: tcfg.maxDecisions });
    // The file's positions only for the file's own telemetry section.
    const locator = tcfg === cfg.telemetry ? cfg.locator : undefined;
    let forwarder: Forwarder | null;
    try {
      forwarder = tcfg.forward === undefined ? null : createForwarder(tcfg.forward, { baseDir: cfg.baseDir, locator, log: tlog });
    } catch (err) {
      // A bad forward endpoint or CA file: what was started so far stops with it (the store's
      // watch and poll kept the process alive; found in review).
      store.close();
      serving?.close();
      throw err;
    }
    telemetry = {
      store: decisionStore,
      forwarder,
      receiver: createOtlpReceiver({ config: tcfg, store: decisionStore, forwarder, authenticator: deps.authenticator, bindings, log: tlog }),
      decisions: createDecisionService({ store: decisionStore, authenticator: deps.authenticator, access: cfg.status, log: tlog }),
    };
  }
  let server;
  try {
    server = await startControlPlaneServer({
      id: cfg.id,
      host: cfg.listen.host,
      port: cfg.listen.port,
      ...(credentials === undefined ? {} : { credentials }),
      ...(cfg.health === undefined ? {} : { health: cfg.health }),
      store,
      policyDir: cfg.policyDir,
      authenticator: deps.authenticator,
      bindings,
      status: cfg.status,
      maxStreams: cfg.maxStreams,
      log: deps.log,
      clock,
      ...(telemetry === null ? {} : { telemetry: { receiver: telemetry.receiver, decisions: telemetry.decisions, maxMessageBytes: tcfg.maxMessageBytes } }),
    });
  } catch (err) {
    store.close();
    serving?.close();
    await telemetry?.forwarder?.close(0);
    throw err;
  }
  return {
    port: server.port,
    healthPort: server.healthPort,
    store,
    decisions: telemetry?.store ?? null,
    otlp: telemetry === null ? null : { receiver: telemetry.receiver, forwarder: telemetry.forwarder },
    streams: () => server.streams(),
    async close() {
      await server.close();
      serving?.close();
      store.close();
      await telemetry?.forwarder?.close(2000);
    },
  };
}
