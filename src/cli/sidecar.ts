import { createAuthenticator } from '../authn/authenticator.ts';
import { extractBearer } from '../authn/extract.ts';
import { isLoopbackAddress } from '../authn/fetch.ts';
import { nativeRsa } from '../authn/native-verify.ts';
import { startAdminServer } from '../admin/server.ts';
import { memoryReport } from '../admin/memory.ts';
import { loadSidecarConfig, readReferencedFile, resolveCredentials, resolveFrom, type ResolvedCredential, type SidecarConfig } from '../config/sidecar.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { createInbound } from '../inbound/server.ts';
import type { SessionSync } from '../cluster/cluster.ts';
import type { InboundCounters } from '../inbound/types.ts';
import { systemClock } from '../lib/clock.ts';
import { rereadCaFile } from '../lib/ca-file.ts';
import type { CaSource } from '../h2/conn.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { trimFilePages } from '../lib/file-pages.ts';
import { issueAt, type YamlLocator } from '../lib/yaml-locate.ts';
import { evaluate, isSignInRoute } from '../policy/evaluate.ts';
import { resolveSessionSecrets } from '../config/session.ts';
import type { SessionStage } from '../session/stage.ts';
import type { CompiledPolicy } from '../policy/model.ts';
import { createFilePolicySource } from '../policy/source.ts';
import { parsePolicyText, readPolicyText } from '../policy/load.ts';
import type { createPolicyWatch } from '../controlplane/client/watch.ts';
import type { createClientCredentialsTokenSource } from '../controlplane/client/token.ts';
import { resolveTelemetry } from '../config/telemetry.ts';
import type { Telemetry } from '../telemetry/telemetry.ts';
import { hostname } from 'node:os';
import type { WorkloadCredential } from '../exchange/setup.ts';
import type { TokenBroker } from '../exchange/broker.ts';
import type { Outbound, TokenSource } from '../outbound/server.ts';
import type { OutboundTracer } from '../outbound/types.ts';
import { type Command, parseFlags, UsageError, untilShutdownSignal } from './command.ts';

/**
 * `ward sidecar`: assembles the stages (config -> policy source -> authenticator -> inbound
 * listeners -> admin) and owns their lifecycle. The order of stages per request lives in
 * inbound/stack.ts; this file only decides the order of start-up and shutdown.
 *
 * What only some configurations use - browser sessions, the egress listener and token exchange,
 * the control-plane client (grpc-js, protobufjs), telemetry (the OTel SDK), the cluster - is
 * imported when configured, not up front: a module's code stays in memory for the life of the
 * process, and a sidecar's memory is paid once per pod (docs/performance.md, "Memory").
 */

export interface RunningSidecar {
  readonly ports: { readonly inbound: number; readonly tls: number | undefined; readonly admin: number; readonly outbound: number | undefined };
  ready(): boolean;
  /** Version of the policy in force (null before one is loaded). */
  policyVersion(): string | null;
  /** The admin `/status` document. */
  status(): unknown;
  /** Prometheus text of the metrics (null with telemetry off). */
  metricsText(): Promise<string> | null;
  /** Graceful: readiness goes false, listeners stop accepting, in-flight calls finish up to drainTimeoutMs. */
  stop(): Promise<void>;
}

export interface SidecarOptions {
  log: Logger;
  configFile?: string;
  fetch?: typeof fetch;
  /**
   * A cluster worker: the policy comes from the primary, which also holds the admin port; the
   * browser sessions one worker ends are ended in all (`sessions`).
   */
  worker?: { policy: (onPolicy: (p: CompiledPolicy) => void) => PolicyProvider; sessions?: SessionSync };
}

/**
 * Starts a sidecar; a start-up that fails part-way closes what it had started (listeners,
 * timers, the policy watch) before the error goes on, so the process can end (found in review:
 * a failed admin listen left the rest running, and the process never exited).
 */
export async function startSidecar(cfg: Readonly<SidecarConfig>, opts: SidecarOptions): Promise<RunningSidecar> {
  const undo: (() => unknown)[] = [];
  try {
    return await startSidecarSteps(cfg, opts, undo);
  } catch (err) {
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch {
        // closing what half-started: the start-up error is the one to report
      }
    }
    throw err;
  }
}

async function startSidecarSteps(cfg: Readonly<SidecarConfig>, opts: SidecarOptions, undo: (() => unknown)[]): Promise<RunningSidecar> {
  const log = opts.log;
  const configFile = opts.configFile ?? `${cfg.baseDir}/(config)`;
  const credentials = resolveCredentials(cfg, configFile);

  const authenticator = createAuthenticator({
    clockSkewSeconds: cfg.authn.clockSkewSeconds,
    maxTokenBytes: cfg.authn.maxTokenBytes,
    cacheEntries: cfg.authn.cacheEntries,
    introspectionCacheMaxSeconds: cfg.authn.introspectionCacheMaxSeconds,
    jwks: cfg.authn.jwks,
    credentials,
    log: log.child({ stage: 'authn' }),
    clock: systemClock,
    ...(opts.fetch === undefined ? {} : { fetch: opts.fetch }),
  });
  undo.push(() => authenticator.close());

  // The egress credential is a configuration matter: checked before anything listens.
  const exchangeCredential =
    cfg.outbound === undefined ? null : (await import('../exchange/setup.ts')).selectExchangeCredential(cfg.outbound, credentials, configFile, cfg.locator);
  // Browser sign-in (session/): its secrets are read now, so a missing one stops start-up; the
  // provider is discovered lazily, so the sidecar starts (and serves bearer calls) without it.
  const sessions = opts.worker?.sessions;
  const session: SessionStage | null =
    cfg.session === undefined
      ? null
      : (await import('../session/stage.ts')).createSessionStage({
          service: cfg.service,
          config: cfg.session,
          secrets: resolveSessionSecrets(cfg.session, cfg.baseDir, configFile, process.env, cfg.locator),
          authenticate: (token) => authenticator.authenticate(token),
          signInRoute: isSignInRoute,
          log: log.child({ stage: 'session' }),
          clock: systemClock,
          ...(opts.fetch === undefined ? {} : { fetch: opts.fetch }),
          onEnded: sessions === undefined ? undefined : (id: string, until: number) => sessions.publish(id, until),
          shareRefresh: sessions === undefined ? undefined : (key, run) => sessions.once(key, run),
        });
  if (session !== null) sessions?.subscribe((id, until) => session.endedElsewhere(id, until));
  const onPolicy = (p: CompiledPolicy): void => authenticator.setIssuers(p.issuers);
  const policy =
    opts.worker === undefined
      ? startPolicyProvider(cfg, credentials, configFile, log.child({ stage: 'policy' }), await loadControlPlaneClient(cfg), onPolicy)
      : opts.worker.policy(onPolicy);
  undo.push(() => policy.close());

  // Telemetry: decisions, spans and metrics; by default exported to the control plane, with the
  // sidecar's own control-plane token (the OTLP receiver authenticates callers off loopback).
  const tcfg = resolveTelemetry(cfg.telemetry, {
    service: cfg.service,
    file: configFile,
    baseDir: cfg.baseDir,
    locator: cfg.locator,
    ...(cfg.policy.controlPlane === undefined ? {} : { controlPlane: controlPlaneTarget(cfg, cfg.policy.controlPlane) }),
  });
  const instanceId = cfg.policy.controlPlane?.instanceId ?? `${hostname()}:${process.pid}`;
  // Set once the listeners are up (the metrics read it from then on).
  let upstreamRequests: InboundCounters['upstreamRequests'] | null = null;
  const telemetry: Telemetry | null = !tcfg.enabled
    ? null
    : (await import('../telemetry/telemetry.ts')).startTelemetry(tcfg, {
        service: cfg.service,
        instanceId,
        log,
        sources: {
          issuers: () => authenticator.status(),
          policyVersion: () => policy.current()?.version ?? null,
          controlPlaneConnected: () => policy.connected(),
          upstreamRequests: () => upstreamRequests,
        },
        // attached only to the signals exported to the control plane (telemetry.ts `channelFor`)
        ...(policy.token !== undefined ? { token: policy.token } : {}),
      });
  if (telemetry !== null) undo.push(() => telemetry.shutdown(0));

  let draining = false;
  const inbound = await createInbound({
    config: cfg,
    configFile,
    authenticate: (token) => authenticator.authenticate(token),
    authenticateThen: (token, ctx, done) => authenticator.authenticateThen(token, ctx, done),
    extractBearer,
    policy: () => policy.current(),
    evaluate,
    log: log.child({ stage: 'inbound' }),
    clock: systemClock,
    ...(telemetry === null ? {} : { tracer: telemetry.inbound }),
    ...(session === null ? {} : { session }),
  });
  undo.push(() => inbound.close());
  const slots = inbound.counters.upstreamRequests;
  upstreamRequests = slots;

  // The egress listener comes up after the inbound one (outbound.md): the app's outgoing calls
  // get a token exchanged for their destination.
  let egress: { outbound: Outbound; broker: TokenBroker | null } | null = null;
  if (cfg.outbound !== undefined) {
    egress = await startOutbound(cfg, configFile, exchangeCredential, log.child({ stage: 'outbound' }), opts.fetch, telemetry === null ? undefined : { now: () => telemetry.outbound.now(), decision: (r, s, raw, fwd) => telemetry.outbound.call(r, s, raw, fwd) });
    const started = egress;
    undo.push(() => started.outbound.close());
  }

  const ready = (): boolean => !draining && policy.current() !== null && authenticator.ready();
  const status = (): unknown => ({
    service: cfg.service,
    policyVersion: policy.current()?.version ?? null,
    policySource: policy.describe,
    policyError: policy.lastError(),
    controlPlaneConnected: policy.connected(),
    issuers: authenticator.status(),
    signatures: nativeRsa.report(),
    upstream: { requests: slots.active, maxRequests: slots.max, overflowed: slots.overflowed },
    outbound: egress === null ? null : { ...egress.outbound.counters, exchange: egress.broker?.stats() ?? null },
    session: session === null ? null : { ...session.counters },
    draining,
  });
  // A cluster worker has no admin listener of its own: the primary's aggregates the workers.
  const admin = opts.worker !== undefined ? null : await startAdminServer({
    host: cfg.admin.host,
    port: cfg.admin.port,
    checks: [
      { name: 'policy', check: () => ({ ok: policy.current() !== null, detail: policy.current()?.version ?? null }) },
      { name: 'issuer-keys', check: () => ({ ok: authenticator.ready(), detail: authenticator.status() }) },
      { name: 'listeners', check: () => ({ ok: !draining }) },
    ],
    documents: { '/status': status, '/memory': memoryReport },
    ...(telemetry === null
      ? {}
      : { texts: { '/metrics': { contentType: 'text/plain; version=0.0.4; charset=utf-8', render: () => telemetry.metricsText() } } }),
  });

  log.info('sidecar started', {
    service: cfg.service,
    inbound: inbound.ports.cleartext,
    tls: inbound.ports.tls ?? null,
    outbound: egress?.outbound.port ?? null,
    admin: admin?.port ?? null,
    upstream: cfg.upstream.url,
    upstreamProtocol: cfg.upstream.protocol,
    policy: policy.describe,
    policyVersion: policy.current()?.version ?? null,
  });

  let stopped: Promise<void> | undefined;
  return {
    ports: { inbound: inbound.ports.cleartext, tls: inbound.ports.tls, admin: admin?.port ?? 0, outbound: egress?.outbound.port },
    ready,
    policyVersion: () => policy.current()?.version ?? null,
    status,
    metricsText: () => telemetry?.metricsText() ?? null,
    stop: () => {
      stopped ??= (async () => {
        draining = true;
        log.info('draining', { deadlineMs: cfg.drainTimeoutMs });
        const deadline = Date.now() + cfg.drainTimeoutMs;
        await inbound.drain(cfg.drainTimeoutMs);
        // Egress after inbound: the calls still in flight may need to call out to finish.
        await egress?.outbound.drain(Math.max(0, deadline - Date.now()));
        // After the drain, so the last calls' spans and decisions go out (bounded wait).
        await telemetry?.shutdown(2000);
        await policy.close();
        authenticator.close();
        await admin?.close();
        log.info('stopped');
      })();
      return stopped;
    },
  };
}

/** Never called: a sidecar whose outbound section declares no destination has nothing to exchange. */
const NO_TOKENS: TokenSource = {
  token: () => ({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null, detail: 'no exchange configured' }),
};

/** The egress listener and its token broker (src/outbound, src/exchange). */
async function startOutbound(
  cfg: Readonly<SidecarConfig>,
  configFile: string,
  credential: WorkloadCredential | null,
  log: Logger,
  fetchImpl: typeof fetch | undefined,
  tracer?: OutboundTracer,
): Promise<{ outbound: Outbound; broker: TokenBroker | null }> {
  const out = cfg.outbound;
  if (out === undefined) throw new Error('startOutbound without an outbound section');
  const [{ createBrokerFromConfig }, { createOutbound }] = await Promise.all([import('../exchange/setup.ts'), import('../outbound/server.ts')]);
  const broker = credential === null ? null : createBrokerFromConfig(out, credential, { log: log.child({ stage: 'exchange' }), clock: systemClock, fetch: fetchImpl });
  const outbound = await createOutbound({
    service: cfg.service,
    config: out,
    baseDir: cfg.baseDir,
    configFile,
    locator: cfg.locator,
    identityPrefix: cfg.identityHeaders.prefix,
    maxTokenBytes: cfg.authn.maxTokenBytes,
    extractBearer,
    tokens: broker ?? NO_TOKENS,
    log,
    clock: systemClock,
    ...(tracer === undefined ? {} : { tracer }),
  });
  return { outbound, broker };
}

/** Where the policy comes from: a watched file, or the control plane's stream. */
export interface PolicyProvider {
  readonly describe: string;
  current(): CompiledPolicy | null;
  lastError(): string | null;
  connected(): boolean | null;
  /** The sidecar's access token for the control plane (absent for a policy file). */
  readonly token?: () => Promise<string>;
  close(): Promise<void>;
}

/** The control-plane client: the policy watch and the sidecar's own token for the control plane. */
interface ControlPlaneClient {
  readonly createPolicyWatch: typeof createPolicyWatch;
  readonly createClientCredentialsTokenSource: typeof createClientCredentialsTokenSource;
}

/** Null without a control plane: a sidecar with a policy file never loads grpc-js's proto stack. */
async function loadControlPlaneClient(cfg: Readonly<SidecarConfig>): Promise<ControlPlaneClient | null> {
  if (cfg.policy.controlPlane === undefined) return null;
  const [watch, token] = await Promise.all([import('../controlplane/client/watch.ts'), import('../controlplane/client/token.ts')]);
  return { createPolicyWatch: watch.createPolicyWatch, createClientCredentialsTokenSource: token.createClientCredentialsTokenSource };
}

/**
 * `client`: loaded by `loadControlPlaneClient` (null for a policy file). `withText` (the cluster
 * primary, which sends each version to its workers as text): also called for every version put in
 * force, with the text it was compiled from.
 */
function startPolicyProvider(
  cfg: Readonly<SidecarConfig>,
  credentials: readonly ResolvedCredential[],
  configFile: string,
  log: Logger,
  client: ControlPlaneClient | null,
  onPolicy: (p: CompiledPolicy) => void,
  withText?: (p: CompiledPolicy, text: string, file: string) => void,
): PolicyProvider {
  const cp = cfg.policy.controlPlane;
  if (cp === undefined) {
    const file = resolveFrom(cfg, cfg.policy.file ?? '');
    // The file source keeps only the compiled policy: re-read the text, and hand it on only if it
    // is still that version (a newer write is about to be reported by the source itself).
    const textOf = (p: CompiledPolicy): void => {
      if (withText === undefined) return;
      try {
        const text = readPolicyText(file);
        if (parsePolicyText(text, file, { service: cfg.service }).version === p.version) withText(p, text, file);
      } catch {
        // changed again meanwhile: the next change event carries it
      }
    };
    // A bad policy file at start-up is a configuration error: it throws (ConfigError with
    // file:line:col) and the sidecar does not start. Later bad versions are refused and logged.
    const source = createFilePolicySource(file, {
      service: cfg.service,
      log,
      onChange: (p) => {
        onPolicy(p);
        textOf(p);
      },
    });
    const initial = source.current();
    if (initial !== null) {
      requireIntrospectionCredentials(initial, credentials, configFile, cfg.locator);
      onPolicy(initial);
      textOf(initial);
    }
    return {
      describe: `file ${file}`,
      current: () => source.current(),
      lastError: () => source.lastError()?.message ?? null,
      connected: () => null,
      close: async () => source.close(),
    };
  }

  if (client === null) throw new Error('control plane without its client');
  const token = controlPlaneToken(cfg, credentials, configFile, log, client);
  if (token === undefined) throw new Error('control plane without a token source');
  const texts = new WeakMap<CompiledPolicy, { text: string; file: string }>();
  if (cp.tls === undefined && !isLoopbackAddress(cp.address)) {
    log.warn('control plane over cleartext: its policy and this sidecar\'s token cross the network unencrypted; set policy.controlPlane.tls', { address: cp.address });
  }
  const watch = client.createPolicyWatch({
    address: cp.address,
    ...(cp.tls === undefined ? {} : { tls: { ca: controlPlaneCa(cfg, cp.tls.caFile, configFile, log) } }),
    service: cfg.service,
    instanceId: cp.instanceId ?? `${hostname()}:${process.pid}`,
    token,
    stateDir: resolveFrom(cfg, cp.stateDir),
    // The same validator as `ward policy check`, plus this sidecar's own requirement: a version
    // it cannot enforce (e.g. introspection without credentials) is NACKed, the last good stays.
    compile: (text, file) => {
      const p = parsePolicyText(text, resolveFrom(cfg, file), { service: cfg.service });
      requireIntrospectionCredentials(p, credentials, configFile, cfg.locator);
      if (withText !== undefined) texts.set(p, { text, file: resolveFrom(cfg, file) });
      return p;
    },
    onPolicy: (p) => {
      onPolicy(p);
      const t = texts.get(p);
      if (t !== undefined) withText?.(p, t.text, t.file);
    },
    log,
  });
  return {
    describe: `control plane ${cp.address}`,
    current: () => watch.current(),
    lastError: () => watch.lastError(),
    connected: () => watch.connected(),
    token,
    close: () => watch.close(),
  };
}

type ControlPlaneConfig = NonNullable<SidecarConfig['policy']['controlPlane']>;

/** The control plane as telemetry's default destination: same address, same TLS. */
function controlPlaneTarget(cfg: Readonly<SidecarConfig>, cp: ControlPlaneConfig): { address: string; tls: boolean; caFile?: string } {
  if (cp.tls === undefined) return { address: cp.address, tls: false };
  return { address: cp.address, tls: true, ...(cp.tls.caFile === undefined ? {} : { caFile: resolveFrom(cfg, cp.tls.caFile) }) };
}

/** The PEM CAs for the control plane's certificate (null: the system roots); unreadable is a config error. */
/** The control plane's CA file: read now (unreadable: a config error), then again at each connection (a rotated CA needs no restart). */
function controlPlaneCa(cfg: Readonly<SidecarConfig>, caFile: string | undefined, configFile: string, log: Logger): CaSource {
  const first = readControlPlaneCa(cfg, caFile, configFile);
  return first === null || caFile === undefined ? first : rereadCaFile(resolveFrom(cfg, caFile), first, log);
}

function readControlPlaneCa(cfg: Readonly<SidecarConfig>, caFile: string | undefined, configFile: string): Buffer | null {
  return caFile === undefined ? null : readReferencedFile(resolveFrom(cfg, caFile), configFile, ['policy', 'controlPlane', 'tls', 'caFile'], cfg.locator);
}

/** The sidecar's own access token for the control plane (undefined without a control plane). */
function controlPlaneToken(
  cfg: Readonly<SidecarConfig>,
  credentials: readonly ResolvedCredential[],
  configFile: string,
  log: Logger,
  client: ControlPlaneClient | null,
): (() => Promise<string>) | undefined {
  const cp = cfg.policy.controlPlane;
  if (cp === undefined || client === null) return undefined;
  const cred = credentials.find((c) => c.issuer === cp.issuer);
  if (cred === undefined) {
    throw new ConfigError([issueAt(cfg.locator, configFile, ['policy', 'controlPlane', 'issuer'], `no authn.credentials entry for issuer ${cp.issuer}`)]);
  }
  return client.createClientCredentialsTokenSource({
    issuer: cred.issuer,
    clientId: cred.clientId,
    clientSecret: cred.clientSecret,
    resource: cp.resource,
    ...(cp.scope === undefined ? {} : { scope: cp.scope }),
    log,
  });
}

/**
 * `concurrency` > 1: the primary holds the policy watch and the admin port, each worker a whole
 * request path (src/cluster/cluster.ts). Returns the primary's or the worker's exit code.
 */
async function runSidecarCluster(cfg: Readonly<SidecarConfig>, log: Logger, configFile: string): Promise<number> {
  const credentials = resolveCredentials(cfg, configFile);
  const [{ isPrimary, runCluster }, client] = await Promise.all([import('../cluster/cluster.ts'), loadControlPlaneClient(cfg)]);
  // The primary's modules are loaded; a worker starts trimming once its sidecar has started.
  if (isPrimary()) trimFilePages();
  return runCluster({
    cfg,
    log,
    startPolicy: (withText) =>
      startPolicyProvider(cfg, credentials, configFile, log.child({ stage: 'policy' }), client, () => {}, withText),
    startSidecar: (policy, workerLog, sessions) => {
      // Telemetry exported to the control plane needs the sidecar's token in every worker.
      const token = controlPlaneToken(cfg, credentials, configFile, workerLog.child({ stage: 'policy' }), client);
      return startSidecar(cfg, {
        log: workerLog,
        configFile,
        worker: { policy: (onPolicy) => ({ ...policy(onPolicy), ...(token === undefined ? {} : { token }) }), sessions },
      }).then((sidecar) => {
        trimFilePages();
        return sidecar;
      });
    },
    compile: (text, file) => parsePolicyText(text, file, { service: cfg.service }),
    untilShutdownSignal: () => untilShutdownSignal(log),
  });
}

/**
 * An issuer that introspects opaque tokens needs the workload's client credentials for it; without
 * them every opaque token would fail at run time, so refuse to start instead.
 */
function requireIntrospectionCredentials(
  policy: CompiledPolicy,
  credentials: readonly ResolvedCredential[],
  configFile: string,
  locator: YamlLocator | undefined,
): void {
  for (const iss of policy.issuers) {
    if (iss.introspection && !credentials.some((c) => c.issuer === iss.issuer)) {
      // At `authn.credentials`, or where it belongs (`authn`, else the top) when the file has none.
      throw new ConfigError([
        issueAt(locator, configFile, ['authn', 'credentials'], `policy ${policy.source} introspects opaque tokens of ${iss.issuer}, but no credentials for that issuer are configured`),
      ]);
    }
  }
}

const HELP = `Usage: ward sidecar --config FILE

Runs the sidecar in front of one local app: every inbound HTTP/1.1, HTTP/2 and gRPC call must
carry an access token that satisfies the service's policy file before it reaches the app.
With an \`outbound\` section it also takes the app's calls to other services and sends each
with a token exchanged for its destination (RFC 8693); see docs/outbound.md.

Options:
  -c, --config FILE   sidecar config (YAML); see docs/sidecar-config.md
  -h, --help          show this help

Signals: SIGTERM/SIGINT drain (stop accepting, GOAWAY, finish in-flight calls up to
drainTimeoutMs) and exit.
`;

export const command: Command = {
  name: 'sidecar',
  summary: 'Run the sidecar in front of a local app',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, { config: { type: 'string', short: 'c' } });
    if (values.config === undefined) throw new UsageError('--config FILE is required');
    const cfg = loadSidecarConfig(values.config);
    const log = createLogger({ level: cfg.logLevel, base: { service: cfg.service } });
    if (cfg.concurrency > 1) return runSidecarCluster(cfg, log, values.config);
    const shutdown = untilShutdownSignal(log);
    const sidecar = await startSidecar(cfg, { log, configFile: values.config });
    trimFilePages();
    await shutdown;
    await sidecar.stop();
    return 0;
  },
};
