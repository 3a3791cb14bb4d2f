import { networkInterfaces } from 'node:os';
import { createListeners } from '../inbound/server.ts';
import { ErrorResponder } from '../inbound/respond.ts';
import { boundHosts, Routes } from './routes.ts';
import { createOutboundStack } from './stack.ts';
import type { OutboundCounters, OutboundDeps } from './types.ts';

/**
 * The egress listener: the app's outgoing calls to other services come here (h2c and
 * HTTP/1.1 on one port, the inbound's own listener machinery), go through the outbound stack
 * (stack.ts: destination, token exchange) and on to the destination's pool (routes.ts).
 */

export type { OutboundCounters, OutboundDecisionRecord, OutboundDeps, TokenSource } from './types.ts';

export interface Outbound {
  readonly port: number;
  readonly counters: Readonly<OutboundCounters>;
  /** Stop accepting, let in-flight calls finish up to `deadlineMs`, then close the pools. */
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

export async function createOutbound(deps: OutboundDeps): Promise<Outbound> {
  const cfg = deps.config;
  const counters: OutboundCounters = {
    activeStreams: 0,
    h2Sessions: 0,
    h1Connections: 0,
    requests: 0,
    forwarded: 0,
    refused: 0,
    passthrough: 0,
    upstreamErrors: 0,
  };
  const responder = new ErrorResponder(deps.service);
  const routes = new Routes({ config: cfg, baseDir: deps.baseDir ?? process.cwd(), configFile: deps.configFile, locator: deps.locator, responder, counters, log: deps.log, identityPrefix: deps.identityPrefix });
  const stack = createOutboundStack({ deps, responder, routes, counters });
  const listeners = await createListeners({
    listen: cfg.listen,
    maxHeaderListBytes: cfg.maxHeaderListBytes,
    maxConcurrentStreams: cfg.maxConcurrentStreams,
    // an app's WebSocket handshake is judged per destination (stack.ts): HTTP/1.1 ones only
    webSockets: true,
    counters,
    responder,
    log: deps.log,
    handle: (ex) => stack.handle(ex),
    refuseUnparsed: (ex, code, detail) => stack.refuseUnparsed(ex, code, detail),
    cancel: (ex) => stack.cancel(ex),
    release: () => routes.close(),
    destroy: () => routes.destroy(),
  });
  routes.selfPort = listeners.ports.cleartext;
  routes.selfHosts = boundHosts(cfg.listen.host, networkInterfaces());
  return {
    port: listeners.ports.cleartext,
    counters,
    drain: (ms) => listeners.drain(ms),
    close: () => listeners.close(),
  };
}
