import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../errors/ward-error.ts';
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

/**
 * A control plane from its config: the policy store (first scan done before the port opens, so
 * the first sidecar already gets a policy) and the gRPC server. `ward control-plane` and the
 * integration tests start it the same way; the validator and the authenticator are passed in.
 */
export interface RunningControlPlane {
  readonly port: number;
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
  },
): Promise<RunningControlPlane> {
  const clock = deps.clock ?? systemClock;
  const credentials = cfg.tls === undefined ? undefined : tlsCredentials(cfg, cfg.tls);
  const store = await createPolicyStore({
    dir: cfg.policyDir,
    parse: deps.parse,
    log: deps.log.child({ component: 'store' }),
    clock,
    debounceMs: cfg.watch.debounceMs,
    pollIntervalMs: cfg.watch.pollIntervalMs,
    maxFileBytes: cfg.watch.maxFileBytes,
    ...(deps.watch === undefined ? {} : { watch: deps.watch }),
  });
  const tcfg = deps.telemetry ?? DEFAULT_TELEMETRY_RECEIVER;
  const bindings = compileBindings(cfg.bindings);
  let telemetry: { store: DecisionStore; receiver: OtlpReceiver; forwarder: Forwarder | null; decisions: ReturnType<typeof createDecisionService> } | null = null;
  if (tcfg.enabled) {
    const tlog = deps.log.child({ component: 'telemetry' });
    const decisionStore = createDecisionStore({ capacity: tcfg.maxDecisions });
    const forwarder = tcfg.forward === undefined ? null : createForwarder(tcfg.forward, { baseDir: cfg.baseDir, log: tlog });
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
    await telemetry?.forwarder?.close(0);
    throw err;
  }
  return {
    port: server.port,
    store,
    decisions: telemetry?.store ?? null,
    otlp: telemetry === null ? null : { receiver: telemetry.receiver, forwarder: telemetry.forwarder },
    streams: () => server.streams(),
    async close() {
      await server.close();
      store.close();
      await telemetry?.forwarder?.close(2000);
    },
  };
}

function tlsCredentials(cfg: Readonly<ControlPlaneConfig>, tls: NonNullable<ControlPlaneConfig['tls']>): grpc.ServerCredentials {
  const read = (field: 'certFile' | 'keyFile'): Buffer => {
    const path = resolve(cfg.baseDir, tls[field]);
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError([{ file: path, line: 1, column: 1, path: `tls.${field}`, message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}` }]);
    }
  };
  return grpc.ServerCredentials.createSsl(null, [{ cert_chain: read('certFile'), private_key: read('keyFile') }], false);
}
