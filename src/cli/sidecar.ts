import { createAuthenticator } from '../authn/authenticator.ts';
import { extractBearer } from '../authn/extract.ts';
import { startAdminServer } from '../admin/server.ts';
import { loadSidecarConfig, resolveCredentials, resolveFrom, type ResolvedCredential, type SidecarConfig } from '../config/sidecar.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { createInbound } from '../inbound/server.ts';
import { systemClock } from '../lib/clock.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { evaluate } from '../policy/evaluate.ts';
import type { CompiledPolicy } from '../policy/model.ts';
import { createFilePolicySource } from '../policy/source.ts';
import { type Command, parseFlags, UsageError } from './command.ts';

/**
 * `ward sidecar`: assembles the stages (config → policy source → authenticator → inbound
 * listeners → admin) and owns their lifecycle. The order of stages per request lives in
 * inbound/stack.ts; this file only decides the order of start-up and shutdown.
 */

export interface RunningSidecar {
  readonly ports: { readonly inbound: number; readonly tls: number | undefined; readonly admin: number };
  ready(): boolean;
  /** Graceful: readiness goes false, listeners stop accepting, in-flight calls finish up to drainTimeoutMs. */
  stop(): Promise<void>;
}

export async function startSidecar(
  cfg: Readonly<SidecarConfig>,
  opts: { log: Logger; configFile?: string; fetch?: typeof fetch },
): Promise<RunningSidecar> {
  const log = opts.log;
  const credentials = resolveCredentials(cfg, opts.configFile ?? `${cfg.baseDir}/(config)`);

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

  // A bad policy file at start-up is a configuration error: it throws (ConfigError with
  // file:line:col) and the sidecar does not start. Later bad versions are refused and logged.
  const policy = createFilePolicySource(resolveFrom(cfg, cfg.policy.file), {
    service: cfg.service,
    log: log.child({ stage: 'policy' }),
    onChange: (p) => authenticator.setIssuers(p.issuers),
  });
  const initial = policy.current();
  if (initial !== null) {
    requireIntrospectionCredentials(initial, credentials, opts.configFile ?? cfg.policy.file);
    authenticator.setIssuers(initial.issuers);
  }

  let draining = false;
  const inbound = await createInbound({
    config: cfg,
    authenticate: (token) => authenticator.authenticate(token),
    extractBearer,
    policy: () => policy.current(),
    evaluate,
    log: log.child({ stage: 'inbound' }),
    clock: systemClock,
  });

  const ready = (): boolean => !draining && policy.current() !== null && authenticator.ready();
  const admin = await startAdminServer({
    host: cfg.admin.host,
    port: cfg.admin.port,
    checks: [
      { name: 'policy', check: () => ({ ok: policy.current() !== null, detail: policy.current()?.version ?? null }) },
      { name: 'issuer-keys', check: () => ({ ok: authenticator.ready(), detail: authenticator.status() }) },
      { name: 'listeners', check: () => ({ ok: !draining }) },
    ],
    documents: {
      '/status': () => ({
        service: cfg.service,
        policyVersion: policy.current()?.version ?? null,
        policyError: policy.lastError()?.message ?? null,
        issuers: authenticator.status(),
        draining,
      }),
    },
  });

  log.info('sidecar started', {
    service: cfg.service,
    inbound: inbound.ports.cleartext,
    tls: inbound.ports.tls ?? null,
    admin: admin.port,
    upstream: cfg.upstream.url,
    upstreamProtocol: cfg.upstream.protocol,
    policyVersion: initial?.version ?? null,
  });

  let stopped: Promise<void> | undefined;
  return {
    ports: { inbound: inbound.ports.cleartext, tls: inbound.ports.tls, admin: admin.port },
    ready,
    stop: () => {
      stopped ??= (async () => {
        draining = true;
        log.info('draining', { deadlineMs: cfg.drainTimeoutMs });
        await inbound.drain(cfg.drainTimeoutMs);
        policy.close();
        authenticator.close();
        await admin.close();
        log.info('stopped');
      })();
      return stopped;
    },
  };
}

/**
 * An issuer that introspects opaque tokens needs the workload's client credentials for it; without
 * them every opaque token would fail at run time, so refuse to start instead.
 */
function requireIntrospectionCredentials(
  policy: CompiledPolicy,
  credentials: readonly ResolvedCredential[],
  configFile: string,
): void {
  for (const iss of policy.issuers) {
    if (iss.introspection && !credentials.some((c) => c.issuer === iss.issuer)) {
      throw new ConfigError([
        {
          file: configFile,
          line: 1,
          column: 1,
          path: 'authn.credentials',
          message: `policy ${policy.source} introspects opaque tokens of ${iss.issuer}, but no credentials for that issuer are configured`,
        },
      ]);
    }
  }
}

const HELP = `Usage: ward sidecar --config FILE

Runs the sidecar in front of one local app: every inbound HTTP/1.1, HTTP/2 and gRPC call must
carry an access token that satisfies the service's policy file before it reaches the app.

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
    const sidecar = await startSidecar(cfg, { log, configFile: values.config });
    await new Promise<void>((resolve) => {
      const onSignal = (sig: NodeJS.Signals): void => {
        log.info('signal received', { signal: sig });
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        resolve();
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
    await sidecar.stop();
    return 0;
  },
};
