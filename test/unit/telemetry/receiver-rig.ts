import * as grpc from '@grpc/grpc-js';
import { compileBindings } from '../../../src/controlplane/server/access.ts';
import { createDecisionStore, type DecisionStore } from '../../../src/controlplane/server/decisions/store.ts';
import { telemetryReceiverSchema } from '../../../src/controlplane/server/otlp/config.ts';
import { createOtlpReceiver, type OtlpReceiver } from '../../../src/controlplane/server/otlp/receiver.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { identity, tableAuthenticator } from '../controlplane/harness.ts';

/** A control plane's OTLP receiver on a loopback gRPC server. */
export interface ReceiverRig {
  readonly port: number;
  readonly store: DecisionStore;
  readonly otlp: OtlpReceiver;
  close(): Promise<void>;
}

/**
 * The receiver as the suites use it: token `orders-token` is `orders-sidecar`, bound to service
 * `orders`; a forwarder that hands each Export it would send to `onForward`; a store of 100
 * decisions.
 */
export async function startReceiver(allowLoopbackWithoutToken: boolean, onForward: (path: string, body: Buffer) => void = () => {}): Promise<ReceiverRig> {
  const store = createDecisionStore({ capacity: 100 });
  const otlp = createOtlpReceiver({
    config: telemetryReceiverSchema.parse({ allowLoopbackWithoutToken }),
    store,
    forwarder: { target: 'recorded', forward: onForward, counters: { forwarded: 0, failed: 0, dropped: 0 }, close: async () => {} },
    authenticator: tableAuthenticator({ 'orders-token': identity('orders-sidecar') }),
    bindings: compileBindings([{ subject: 'orders-sidecar', services: ['orders'] }]),
    log: silentLogger,
  });
  const server = new grpc.Server();
  otlp.register(server);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port, store, otlp, close: () => new Promise((res) => server.tryShutdown(() => res())) };
}
