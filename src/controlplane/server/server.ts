import * as grpc from '@grpc/grpc-js';
import type { ErrorCode } from '../../errors/codes.ts';
import { ERROR_TABLE } from '../../errors/table.ts';
import { type Clock, systemClock } from '../../lib/clock.ts';
import { tokenHash } from '../../lib/hash.ts';
import type { Logger } from '../../lib/log.ts';
import type { Identity } from '../../policy/model.ts';
import { SERVICE_NAME } from '../../policy/schema.ts';
import {
  type HealthStatusWire,
  healthClient,
  INSTANCE_ID,
  MAX_INSTANCE_ID,
  MAX_VERSION_INFO,
  POLICY_DISCOVERY_SERVICE,
  policyDiscoveryClient,
  type PolicyRequestWire,
  type PolicyResponseWire,
  type StatusRequestWire,
  type StatusResponseWire,
} from '../proto.ts';
import { type Authenticate, type BindingCheck, bearerFromMetadata, isLoopbackPeer } from './access.ts';
import type { DecisionService } from './decisions/service.ts';
import type { OtlpReceiver } from './otlp/receiver.ts';
import type { PolicyStore } from './store.ts';
import { preAuthInterceptor } from './pre-auth.ts';
import { createStreamRegistry, type StreamHandle, VERSION_INFO_TOO_LONG } from './streams.ts';

/**
 * The gRPC server: ward.v1.PolicyDiscovery and grpc.health.v1.Health on one port.
 *
 * A policy stream is admitted in this order, cheapest first: stream limit -> bearer present ->
 * token valid (authn, the same validation sidecars apply to callers) -> first request well formed
 * -> identity bound to the requested service. Only then are response headers sent (the client's
 * "connected"), and the stream joins the registry, which pushes the current version if the
 * sidecar does not hold it. A stream whose token expires is ended with UNAUTHENTICATED; the
 * sidecar reconnects with a fresh token.
 */

export interface ControlPlaneServerOptions {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly credentials?: grpc.ServerCredentials;
  /**
   * A second, cleartext listener with grpc.health.v1 alone: the kubelet's gRPC probes speak
   * no TLS, so a control plane serving TLS is probed there.
   */
  readonly health?: { readonly host: string; readonly port: number };
  readonly store: PolicyStore;
  /** Shown by GetStatus. */
  readonly policyDir: string;
  readonly authenticator: Authenticate;
  readonly bindings: BindingCheck;
  readonly status: { readonly allowLoopbackWithoutToken: boolean; readonly subjects: readonly string[] };
  readonly maxStreams: number;
  readonly log: Logger;
  readonly clock?: Clock;
  /** OTLP Export services (telemetry from sidecars) and the decision queries, on the same port. */
  readonly telemetry?: { readonly receiver: OtlpReceiver; readonly decisions: DecisionService; readonly maxMessageBytes: number };
}

export interface ControlPlaneServer {
  readonly port: number;
  /** The health listener's port, when one was asked for. */
  readonly healthPort: number | undefined;
  /** Open, authorized policy streams. */
  streams(): number;
  /** Ends every stream with UNAVAILABLE (sidecars reconnect, possibly to another replica) and stops. */
  close(): Promise<void>;
}

const MAX_TIMER_MS = 2 ** 31 - 1;
/** An authenticated stream that never says which service it wants is closed after this. */
const FIRST_REQUEST_TIMEOUT_MS = 10_000;

type ServiceError = Partial<grpc.StatusObject> & { code: grpc.status; details: string };

function refusal(code: ErrorCode): ServiceError {
  const row = ERROR_TABLE[code];
  return { code: row.grpc, details: row.message };
}

export async function startControlPlaneServer(opts: ControlPlaneServerOptions): Promise<ControlPlaneServer> {
  const { log, store } = opts;
  const clock = opts.clock ?? systemClock;
  const startedAt = clock();
  const registry = createStreamRegistry({ store, controlPlaneId: opts.id, log: log.child({ component: 'streams' }), clock });
  /** Open StreamPolicy calls (admitted or still authenticating), each with its finisher. */
  const calls = new Map<grpc.ServerDuplexStream<PolicyRequestWire, PolicyResponseWire>, (status: ServiceError) => void>();
  let shuttingDown = false;

  async function authenticate(md: grpc.Metadata, peer: string): Promise<{ ok: true; identity: Identity } | { ok: false; status: ServiceError }> {
    const bearer = bearerFromMetadata(md);
    if (!bearer.ok) {
      log.info('control-plane call refused', { peer, code: bearer.code });
      return { ok: false, status: refusal(bearer.code) };
    }
    try {
      const r = await opts.authenticator.authenticate(bearer.token);
      if (r.ok) return r;
      log.info('control-plane call refused', { peer, code: r.error.code, detail: r.error.detail, token: tokenHash(bearer.token) });
      return { ok: false, status: refusal(r.error.code) };
    } catch (err) {
      // Fail closed; a bad token never throws past this boundary.
      log.error('authenticator failed', { peer, err, token: tokenHash(bearer.token) });
      return { ok: false, status: refusal('ERR_INTERNAL') };
    }
  }

  function streamPolicy(call: grpc.ServerDuplexStream<PolicyRequestWire, PolicyResponseWire>): void {
    const peer = call.getPeer();
    let handle: StreamHandle | null = null;
    let expiry: NodeJS.Timeout | null = null;
    let ended = false;
    const queued: PolicyRequestWire[] = [];
    let admitted = false;
    /** The sidecar half-closed before it was admitted: no more requests, but the verdict still gives the status. */
    let halfClosed = false;

    const release = (): boolean => {
      if (ended) return false;
      ended = true;
      if (expiry !== null) clearTimeout(expiry);
      handle?.close();
      handle = null;
      calls.delete(call);
      return true;
    };
    /** Ends the call: OK when `status` is null, else with that status. */
    const finish = (status: ServiceError | null): void => {
      if (!release()) return;
      if (status === null) call.end();
      else call.emit('error', status);
    };
    call.on('cancelled', release);
    call.on('error', release); // grpc-js's own listener turns it into the call's status
    call.on('end', () => {
      // The sidecar half-closed: end our side too, once admitted. Before that, a refusal must
      // still reach it as its status, not as an OK (regression: a caller that half-closed while
      // its token was being checked got OK whatever the verdict).
      if (admitted) finish(null);
      else halfClosed = true;
    });
    call.on('data', (req: PolicyRequestWire) => {
      if (ended) return;
      if (!admitted) {
        // Requests that arrive while the token is being verified wait for the verdict; only the
        // first one matters before admission, so the queue holds at most a few.
        if (queued.length < 4) queued.push(req);
        return;
      }
      onRequest(req);
    });

    function onRequest(req: PolicyRequestWire): void {
      if (handle === null) return;
      const outcome = handle.onRequest(req);
      if (outcome.kind === 'invalid') finish({ code: grpc.status.INVALID_ARGUMENT, details: outcome.message });
    }

    if (shuttingDown) {
      finish({ code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
      return;
    }
    if (calls.size >= opts.maxStreams) {
      log.warn('policy stream refused: stream limit reached', { peer, maxStreams: opts.maxStreams });
      finish({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'too many policy streams' });
      return;
    }
    calls.set(call, finish);

    void (async () => {
      const auth = await authenticate(call.metadata, peer);
      if (ended) return;
      if (!auth.ok) {
        finish(auth.status);
        return;
      }
      const identity = auth.identity;
      const first = queued.shift() ?? (halfClosed ? undefined : await nextRequest());
      if (ended) return;
      if (first === undefined) {
        finish({ code: grpc.status.INVALID_ARGUMENT, details: `no first request within ${FIRST_REQUEST_TIMEOUT_MS} ms` });
        return;
      }
      if (!SERVICE_NAME.test(first.service) || first.instanceId === '' || first.instanceId.length > MAX_INSTANCE_ID || first.responseNonce !== '') {
        finish({ code: grpc.status.INVALID_ARGUMENT, details: `the first request needs a service, an instance_id (at most ${MAX_INSTANCE_ID} characters) and no response_nonce` });
        return;
      }
      // `ward status` prints the instance id and logs carry it: a newline or an ANSI escape in it
      // would let any bound sidecar forge rows or rewrite the operator's terminal (found in review).
      if (!INSTANCE_ID.test(first.instanceId)) {
        finish({ code: grpc.status.INVALID_ARGUMENT, details: 'instance_id must be printable ASCII (no control characters)' });
        return;
      }
      if (first.versionInfo.length > MAX_VERSION_INFO) {
        finish({ code: grpc.status.INVALID_ARGUMENT, details: VERSION_INFO_TOO_LONG });
        return;
      }
      if (!opts.bindings(identity, first.service)) {
        log.warn('policy stream refused: identity not bound to the service', { peer, subject: identity.subject, issuer: identity.issuer, service: first.service });
        finish({ code: grpc.status.PERMISSION_DENIED, details: `identity is not bound to service '${first.service}'` });
        return;
      }
      admitted = true;
      call.sendMetadata(new grpc.Metadata());
      handle = registry.open({
        service: first.service,
        instanceId: first.instanceId,
        versionInfo: first.versionInfo,
        identity: { subject: identity.subject, issuer: identity.issuer },
        peer,
        send: (r) => {
          if (!ended) call.write(r);
        },
      });
      // Zero trust does not end at connect: when the token expires, so does the stream.
      const ms = identity.expiresAt * 1000 - clock();
      expiry = setTimeout(() => {
        log.info('policy stream ended: token expired', { peer, subject: identity.subject, service: first.service });
        finish(refusal('ERR_TOKEN_EXPIRED'));
      }, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
      expiry.unref();
      for (const r of queued.splice(0)) onRequest(r);
      if (halfClosed) finish(null);
    })();

    /** The first request, or undefined when the call ends or stays silent too long. */
    function nextRequest(): Promise<PolicyRequestWire | undefined> {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          cleanup();
          resolve(undefined);
        }, FIRST_REQUEST_TIMEOUT_MS);
        timer.unref();
        const onData = (): void => {
          cleanup();
          resolve(queued.shift());
        };
        const onDone = (): void => {
          cleanup();
          resolve(undefined);
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          call.off('data', onData);
          call.off('end', onDone);
          call.off('cancelled', onDone);
          call.off('error', onDone);
        };
        // The queueing 'data' listener above runs first (registered earlier).
        call.on('data', onData);
        call.on('end', onDone);
        call.on('cancelled', onDone);
        call.on('error', onDone);
      });
    }
  }

  function getStatus(call: grpc.ServerUnaryCall<StatusRequestWire, StatusResponseWire>, cb: grpc.sendUnaryData<StatusResponseWire>): void {
    const peer = call.getPeer();
    void (async () => {
      const hasToken = call.metadata.get('authorization').length > 0;
      if (!(hasToken === false && opts.status.allowLoopbackWithoutToken && isLoopbackPeer(peer))) {
        const auth = await authenticate(call.metadata, peer);
        if (!auth.ok) return cb(auth.status);
        if (!opts.status.subjects.includes(auth.identity.subject)) {
          log.warn('status refused: subject not allowed', { peer, subject: auth.identity.subject });
          return cb({ code: grpc.status.PERMISSION_DENIED, details: 'identity may not read the control-plane status' });
        }
      }
      const only = call.request.service;
      const problems = store.problems();
      cb(null, {
        controlPlaneId: opts.id,
        policyDir: opts.policyDir,
        startedAtUnixMs: startedAt,
        services: store
          .services()
          .filter((s) => only === '' || s.service === only)
          .map((s) => ({
            service: s.service,
            version: s.version,
            sourceFile: s.file,
            updatedAtUnixMs: s.updatedAt,
            lastError: (problems.find((p) => p.file === s.file)?.issues ?? []).map((i) => ({ ...i })),
          })),
        files: problems
          .filter((p) => only === '' || p.service === only)
          .map((p) => ({ file: p.file, service: p.service ?? '', issues: p.issues.map((i) => ({ ...i })), sinceUnixMs: p.since })),
        sidecars: registry.status(only),
      });
    })();
  }

  // ---- grpc.health.v1 ----
  const healthWatchers = new Set<{ call: grpc.ServerWritableStream<{ service: string }, { status: HealthStatusWire }> }>();
  const healthOf = (service: string): HealthStatusWire | null =>
    service === '' || service === POLICY_DISCOVERY_SERVICE ? (shuttingDown ? 'NOT_SERVING' : 'SERVING') : null;

  const server = new grpc.Server({
    // Detect dead sidecars (half-open TCP) so their stream state is released.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    // Policy-stream requests are small; OTLP batches need more (the OTLP default is 4 MiB).
    'grpc.max_receive_message_length': opts.telemetry?.maxMessageBytes ?? 64 * 1024,
    // The bearer token is checked before a message is read (pre-auth.ts).
    interceptors: [preAuthInterceptor(opts.authenticator, log)],
  });
  server.addService(policyDiscoveryClient().service, { StreamPolicy: streamPolicy, GetStatus: getStatus });
  const healthService = {
    Check: (call: grpc.ServerUnaryCall<{ service: string }, { status: HealthStatusWire }>, cb: grpc.sendUnaryData<{ status: HealthStatusWire }>) => {
      const s = healthOf(call.request.service);
      if (s === null) cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
      else cb(null, { status: s });
    },
    Watch: (call: grpc.ServerWritableStream<{ service: string }, { status: HealthStatusWire }>) => {
      const w = { call };
      call.write({ status: healthOf(call.request.service) ?? 'SERVICE_UNKNOWN' });
      if (shuttingDown) {
        call.end();
        return;
      }
      healthWatchers.add(w);
      call.on('cancelled', () => healthWatchers.delete(w));
    },
  };
  server.addService(healthClient().service, healthService);

  if (opts.telemetry !== undefined) {
    opts.telemetry.receiver.register(server);
    opts.telemetry.decisions.register(server);
  }

  const bind = (srv: grpc.Server, host: string, p: number, creds: grpc.ServerCredentials): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      srv.bindAsync(`${host}:${p}`, creds, (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  const port = await bind(server, opts.host, opts.port, opts.credentials ?? grpc.ServerCredentials.createInsecure());
  let healthServer: grpc.Server | null = null;
  let healthPort: number | undefined;
  if (opts.health !== undefined) {
    healthServer = new grpc.Server();
    healthServer.addService(healthClient().service, healthService);
    try {
      healthPort = await bind(healthServer, opts.health.host, opts.health.port, grpc.ServerCredentials.createInsecure());
    } catch (err) {
      server.forceShutdown();
      healthServer.forceShutdown();
      throw err;
    }
  }
  log.info('control plane listening', { host: opts.host, port, id: opts.id, tls: opts.credentials !== undefined, ...(healthPort === undefined ? {} : { healthPort }) });

  let closing: Promise<void> | undefined;
  return {
    port,
    healthPort,
    streams: () => registry.size(),
    close() {
      closing ??= (async () => {
        shuttingDown = true;
        for (const w of healthWatchers) {
          if (healthOf(w.call.request.service) !== null) w.call.write({ status: 'NOT_SERVING' });
          w.call.end();
        }
        healthWatchers.clear();
        opts.telemetry?.decisions.close();
        for (const f of [...calls.values()]) f({ code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
        registry.close();
        await Promise.all([shutdown(server), healthServer === null ? undefined : shutdown(healthServer)]);
      })();
      return closing;
    },
  };
}

/** Graceful stop, forced after 2 s. */
function shutdown(server: grpc.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    t.unref();
    server.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
