import { startInjectorServer } from '../inject/webhook-server.ts';
import { createLogger } from '../lib/log.ts';
import { type Command, parseFlags, UsageError, untilShutdownSignal } from './command.ts';
import { SETTINGS_FLAGS, SETTINGS_HELP, settingsFromFlags } from './inject.ts';

const HELP = `Usage: ward injector --cert FILE --key FILE [--port N] [options]

Runs the mutating admission webhook that injects the ward sidecar into pods as they are
created: AdmissionReview v1 on POST /inject (HTTPS), a JSONPatch in the answer. Same logic as
'ward inject'. Pods that are not opted in, opted out, already injected or on the host network
are allowed unchanged; a pod that opted in with annotations that cannot be honoured is denied
with the reason. Deploy it with deploy/base (MutatingWebhookConfiguration, failurePolicy Fail
for enrolled namespaces); see docs/kubernetes.md.

Options:
      --cert FILE         TLS certificate chain (PEM); reloaded when it changes
      --key FILE          TLS private key (PEM)
      --host HOST         address to bind (default 0.0.0.0)
  -p, --port N            port (default 9443)
      --log-level LEVEL   debug | info | warn | error (default info)
${SETTINGS_HELP}
  -h, --help              show this help

Also serves GET /healthz and /readyz. Runs until SIGTERM or SIGINT.
`;

export const command: Command = {
  name: 'injector',
  summary: 'Run the sidecar-injecting admission webhook (HTTPS)',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      cert: { type: 'string' },
      key: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string', short: 'p' },
      'log-level': { type: 'string' },
      ...SETTINGS_FLAGS,
    });
    if (values.cert === undefined || values.key === undefined) throw new UsageError('--cert FILE and --key FILE are required');
    const port = Number(values.port ?? '9443');
    if (!/^\d+$/.test(values.port ?? '9443') || port > 65535) throw new UsageError(`--port must be 0..65535, got '${values.port}'`);
    const level = values['log-level'] ?? 'info';
    if (level !== 'debug' && level !== 'info' && level !== 'warn' && level !== 'error') throw new UsageError(`--log-level must be debug, info, warn or error`);
    const settings = settingsFromFlags(values);
    const log = createLogger({ level, base: { component: 'injector' } });
    const shutdown = untilShutdownSignal(log);
    const server = await startInjectorServer({ host: values.host ?? '0.0.0.0', port, certFile: values.cert, keyFile: values.key, settings, log });
    process.stdout.write(`ward injector listening on https://${values.host ?? '0.0.0.0'}:${server.port}/inject\n`);
    await shutdown;
    await server.close();
    return 0;
  },
};
