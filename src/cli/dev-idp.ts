import { DEFAULT_DEV_IDP_YAML, type DevIdpConfig, loadDevIdpConfig, defaultDevIdpConfig } from '../devidp/config.ts';
import { DEV_ONLY_NOTICE, startDevIdp } from '../devidp/provider.ts';
import { createLogger } from '../lib/log.ts';
import { type Command, parseFlags, UsageError, untilShutdownSignal } from './command.ts';

const HELP = `Usage: ward dev-idp [--config FILE] [--port N] [--issuer-host HOST]

Runs a development OpenID Provider (oidc-provider) for the demo, local testing and CI.
DEVELOPMENT ONLY: its client secrets are public and all state is in memory.

It offers discovery, JWKS, client_credentials with RFC 9068 JWT access tokens (or opaque
tokens, per resource server), RFC 7662 introspection, RFC 8693 token exchange (the new token
carries an 'act' claim), and key rotation. It listens on loopback only.

Options:
  -c, --config FILE       clients and resource servers (YAML); default: the embedded demo config
  -p, --port N            port (default 4400; 0 picks a free one). Overrides the config file
      --issuer-host HOST  host of the issuer URL and address bound: a loopback address
                          (127.0.0.1, the default, or any of 127.0.0.0/8), ::1 or localhost.
                          Any other address is refused
      --print-config      print the embedded default config and exit
  -h, --help              show this help

Endpoints (issuer http://HOST:PORT):
  /.well-known/openid-configuration   discovery
  /jwks                               signing keys (current and recently rotated)
  /auth                               authorization endpoint (code flow with PKCE, browser sign-in)
  /interaction/<uid>                  the development login page (fixed users from the config;
                                      embedded: alice / alice-password, bob / bob-password)
  /token                              authorization_code, refresh_token, client_credentials and
                                      token exchange (RFC 8693)
  /token/introspection                RFC 7662 (opaque tokens)
  /token/revocation                   RFC 7009
  /session/end                        RP-initiated logout
  POST /dev/rotate-keys               new signing key now; answers {"kid": "..."} (dev only)

Runs until SIGINT or SIGTERM.
`;

export const command: Command = {
  name: 'dev-idp',
  summary: 'Run the development OpenID Provider (not for production)',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: 'string', short: 'c' },
      port: { type: 'string', short: 'p' },
      'issuer-host': { type: 'string' },
      'print-config': { type: 'boolean' },
    });
    if (values['print-config'] === true) {
      process.stdout.write(DEFAULT_DEV_IDP_YAML);
      return 0;
    }
    let cfg: DevIdpConfig = values.config === undefined ? defaultDevIdpConfig() : loadDevIdpConfig(values.config);
    if (values.port !== undefined) {
      const port = Number(values.port);
      if (!/^\d+$/.test(values.port) || port > 65535) throw new UsageError(`--port must be 0..65535, got '${values.port}'`);
      cfg = { ...cfg, port };
    }
    if (values['issuer-host'] !== undefined) cfg = { ...cfg, host: values['issuer-host'] };

    const log = createLogger();
    const shutdown = untilShutdownSignal(log);
    const idp = await startDevIdp(cfg, { log });
    process.stderr.write(`\n  *** ${DEV_ONLY_NOTICE} ***\n\n`);
    process.stdout.write(`dev-idp issuer: ${idp.issuer}\n`);
    await shutdown;
    await idp.close();
    return 0;
  },
};
