import { loadControlPlaneConfig } from '../controlplane/server/config.ts';
import { runControlPlane } from '../controlplane/server/run.ts';
import { createLogger } from '../lib/log.ts';
import { type Command, parseFlags, UsageError, untilShutdownSignal } from './command.ts';

const HELP = `Usage: ward control-plane --config FILE [--port N]

Serves each service's policy to that service's sidecars over gRPC (ward.v1.PolicyDiscovery,
xDS-style: versions, nonces, ACK/NACK) and answers grpc.health.v1.Health on the same port
(and, with 'health' in the config, on a cleartext port of its own for probes that speak no TLS).
With 'tls', the certificate and key are re-read when their files change.

It watches the policy directory (one policy file per service, *.yaml / *.yml; Kubernetes
ConfigMap volumes work as they are) and validates every file with the checks of
'ward policy check'. A new valid version reaches the subscribed sidecars at once; an invalid
file is refused, its service keeps its previous valid version, and the error (file:line:column)
is logged and shown by 'ward status'.

Sidecars authenticate with a bearer access token from a trusted issuer and may subscribe only
to the services their identity is bound to (config 'bindings').

Options:
  -c, --config FILE   control-plane config (YAML); see docs/control-plane.md
  -p, --port N        listen port, overriding listen.port (0 picks a free one)
  -h, --help          show this help

Prints 'control-plane listening on HOST:PORT' on stdout once it serves (and then
'control-plane health on HOST:PORT' with 'health'). Runs until SIGINT or
SIGTERM, then ends every sidecar stream with UNAVAILABLE (sidecars keep their policy and
reconnect).
`;


export const command: Command = {
  name: 'control-plane',
  summary: 'Serve policies to sidecars (gRPC, xDS-style ACK/NACK)',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, { config: { type: 'string', short: 'c' }, port: { type: 'string', short: 'p' } });
    if (values.config === undefined) throw new UsageError('--config FILE is required');
    let cfg = loadControlPlaneConfig(values.config);
    if (values.port !== undefined) {
      const port = Number(values.port);
      if (!/^\d+$/.test(values.port) || port > 65535) throw new UsageError(`--port must be 0..65535, got '${values.port}'`);
      cfg = { ...cfg, listen: { ...cfg.listen, port } };
    }
    const log = createLogger({ level: cfg.logLevel, base: { component: 'control-plane', id: cfg.id } });

    const shutdown = untilShutdownSignal(log);
    const cp = await runControlPlane(cfg, { log });
    process.stdout.write(`control-plane listening on ${cfg.listen.host}:${cp.port}\n`);
    if (cfg.health !== undefined) process.stdout.write(`control-plane health on ${cfg.health.host}:${cp.healthPort ?? cfg.health.port}\n`);
    // Keys are fetched in the background; until they arrive, sidecars get UNAVAILABLE and retry.
    void cp.keysReady(10_000).then((ok) => {
      if (!ok) log.warn('issuer keys not loaded yet; sidecar streams are refused with UNAVAILABLE until they are');
    });

    await shutdown;
    await cp.close();
    log.info('stopped');
    return 0;
  },
};
