import { runDemo } from '../demo/demo.ts';
import { createLogger } from '../lib/log.ts';
import { type Command, parseFlags } from './command.ts';

const HELP = `Usage: ward demo [--once] [--verbose]

Runs the demo mesh on loopback: the development IdP, the control plane, the Orders gRPC app, a
sidecar in front of it with the policy of deploy/examples/orders.policy.yaml, and a client that
makes allowed and denied calls. Each call is printed with what should happen and what did: the
gRPC status, the reason code (x-ward-reason) and the decision id. Then a three-service token
exchange chain, the decision trail from the control plane, and a web app behind a sidecar with
browser sign-in (its URL is printed).

Options:
      --once      run the calls, print the table and exit; exit code 1 if any call did not
                  go as expected
  -v, --verbose   show the components' info logs (default: warnings only)
  -h, --help      show this help

Without --once the mesh keeps running until Ctrl-C, so you can make calls of your own.
`;

export const command: Command = {
  name: 'demo',
  summary: 'Run the demo mesh: dev IdP, control plane, a gRPC app behind a sidecar, an exchange chain, browser sign-in',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, { once: { type: 'boolean' }, verbose: { type: 'boolean', short: 'v' } });
    const log = createLogger({ level: values.verbose === true ? 'info' : 'warn' });
    return runDemo({ once: values.once === true, log });
  },
};
