import { ConfigError } from '../errors/ward-error.ts';
import { type Command, UsageError } from './command.ts';

/**
 * The `ward` command. Subcommands load lazily so `ward policy check` does not pay for the proxy
 * or the IdP. This file is the only place that decides the exit code.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  sidecar: { summary: 'Run the sidecar in front of a local app', load: async () => (await import('./sidecar.ts')).command },
  policy: { summary: 'Check policy files and explain decisions', load: async () => (await import('./policy.ts')).command },
  'dev-idp': { summary: 'Run the development OpenID Provider (not for production)', load: async () => (await import('./dev-idp.ts')).command },
  'control-plane': { summary: 'Run the control plane that distributes policy to sidecars', load: async () => (await import('./control-plane.ts')).command },
  status: { summary: "Show the control plane's view of services and sidecars", load: async () => (await import('./status.ts')).command },
  decisions: { summary: 'Show recent authorization decisions from the control plane', load: async () => (await import('./decisions.ts')).command },
  inject: { summary: 'Inject the sidecar into Kubernetes YAML (like istioctl kube-inject)', load: async () => (await import('./inject.ts')).command },
  injector: { summary: 'Run the sidecar-injecting admission webhook (HTTPS)', load: async () => (await import('./injector.ts')).command },
  capture: { summary: 'Set up iptables traffic capture for the sidecar (init container)', load: async () => (await import('./capture.ts')).command },
  demo: { summary: 'Run the demo mesh: dev IdP, a gRPC app behind a sidecar, and a client', load: async () => (await import('./demo.ts')).command },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `ward: zero-trust sidecar for HTTP/2, gRPC and HTTP/1.1 services\n\nUsage: ward <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun 'ward <command> --help' for the options of a command.\n`;
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const entry = COMMANDS[name];
  if (entry === undefined) {
    process.stderr.write(`ward: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    const cmd = await entry.load();
    const wantsHelp = cmd.ownHelp === true ? rest[0] === '--help' || rest[0] === '-h' : rest.includes('--help') || rest.includes('-h');
    if (wantsHelp) {
      process.stdout.write(cmd.help.endsWith('\n') ? cmd.help : `${cmd.help}\n`);
      return 0;
    }
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`ward ${name}: ${err.message}\nRun 'ward ${name} --help' for usage.\n`);
      return 2;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    process.stderr.write(`ward ${name}: ${(err as Error).message ?? String(err)}\n`);
    return 1;
  }
}
