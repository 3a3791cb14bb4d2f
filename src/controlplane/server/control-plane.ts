import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../errors/ward-error.ts';
import { type Clock, systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { type Authenticate, compileBindings } from './access.ts';
import type { ControlPlaneConfig } from './config.ts';
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
  streams(): number;
  close(): Promise<void>;
}

export async function startControlPlane(
  cfg: Readonly<ControlPlaneConfig>,
  deps: { readonly log: Logger; readonly parse: PolicyParser; readonly authenticator: Authenticate; readonly clock?: Clock; readonly watch?: boolean },
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
      bindings: compileBindings(cfg.bindings),
      status: cfg.status,
      maxStreams: cfg.maxStreams,
      log: deps.log,
      clock,
    });
  } catch (err) {
    store.close();
    throw err;
  }
  return {
    port: server.port,
    store,
    streams: () => server.streams(),
    async close() {
      await server.close();
      store.close();
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
