import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { fetchStatus, formatStatus } from '../controlplane/client/status.ts';
import { type Command, parseFlags, UsageError } from './command.ts';
import { CHANNEL_FLAGS, channelHelp, controlPlaneChannel } from './control-plane-channel.ts';

const HELP = `Usage: ward status [--address HOST:PORT] [--json] [--service NAME] [--token-file FILE]

Shows the control plane's view: per service the version served, its source file and the last
error of that file (an invalid edit keeps the previous valid version in force); every refused
policy file; and per connected sidecar its service, instance id, identity, the version it
acknowledged, a version still pending, when it connected and its last NACK reason.

Options:
  -a, --address HOST:PORT   control plane (default 127.0.0.1:15010)
      --json                the full response as JSON (full versions, times in ms since the epoch)
  -s, --service NAME        only this service
      --token-file FILE     send 'authorization: Bearer <file content>'. Needed unless the
                            control plane allows loopback callers without a token (its default)
${channelHelp(28)}
      --timeout-ms N        give up after N ms (default 5000)
  -h, --help                show this help

Exit status: 0 when the control plane answered, 1 otherwise.
`;

export const command: Command = {
  name: 'status',
  summary: 'Show the control plane\'s services, policy errors and connected sidecars',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      address: { type: 'string', short: 'a' },
      json: { type: 'boolean' },
      service: { type: 'string', short: 's' },
      'token-file': { type: 'string' },
      ...CHANNEL_FLAGS,
      'timeout-ms': { type: 'string' },
    });
    const address = values.address ?? '127.0.0.1:15010';
    if (!/^[^\s/]+:\d{1,5}$/.test(address)) throw new UsageError(`--address must be HOST:PORT, got '${address}'`);
    const timeoutMs = values['timeout-ms'] === undefined ? 5000 : Number(values['timeout-ms']);
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout-ms must be a positive integer');
    const token = values['token-file'] === undefined ? undefined : readFileSync(values['token-file'], 'utf8').trim();
    const channel = controlPlaneChannel(values);

    try {
      const status = await fetchStatus({
        address,
        timeoutMs,
        ...(token === undefined ? {} : { token }),
        ...(values.service === undefined ? {} : { service: values.service }),
        credentials: channel.credentials,
        channelOptions: channel.options,
      });
      process.stdout.write(values.json === true ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      return 0;
    } catch (err) {
      const e = err as Partial<grpc.ServiceError>;
      const code = typeof e.code === 'number' ? (grpc.status[e.code] ?? String(e.code)) : 'ERROR';
      process.stderr.write(`ward status: ${address}: ${code}: ${e.details ?? e.message ?? String(err)}\n`);
      return 1;
    }
  },
};
