import { spawn } from 'node:child_process';
import {
  applyCapture,
  type CaptureOptions,
  captureRules,
  type CommandRunner,
  ipv6FilterRules,
  parseCidrList,
  parsePortList,
  removeCapture,
  validateCaptureOptions,
} from '../inject/capture.ts';
import { type Command, parseFlags, UsageError } from './command.ts';

const HELP = `Usage: ward capture [options] [--dry-run | --cleanup]

Sets up traffic capture in the current network namespace (what the injected 'ward-init'
container runs, as root with NET_ADMIN and NET_RAW): iptables nat rules that redirect inbound
TCP to the sidecar's inbound listener (chain WARD_INBOUND) and the app's outbound TCP to its
egress listener (chain WARD_OUTPUT), except traffic of the sidecar's own uid/gid, loopback,
and excluded ports and CIDRs. Applied with 'iptables-restore --noflush' (other rules stay);
earlier ward rules are removed first, so running it twice is harmless.

Options:
      --inbound-port N              sidecar inbound listener (default 15006)
      --outbound-port N             sidecar egress listener (default 15001)
      --no-outbound                 leave outbound traffic alone
      --proxy-uid N                 the sidecar's uid: its traffic is never redirected (default 1337; not 0)
      --proxy-gid N                 the sidecar's gid, likewise (default 1337; not 0)
      --inbound-ports LIST|*        inbound ports to capture (default *: every port)
      --exclude-inbound-ports LIST  inbound ports never captured (e.g. the admin port 15000)
      --exclude-outbound-ports LIST outbound ports never captured
      --exclude-outbound-cidrs LIST outbound IPv4/IPv6 CIDRs never captured
      --ipv6 auto|on|off            also capture IPv6 with ip6tables (default auto: without a nat table,
                                    refuse in the filter table what would be captured, else fail if the
                                    pod has an IPv6 address, link-local included; on: the nat table or
                                    fail; off: leave IPv6 alone)
      --dry-run                     print the rules (iptables-restore input) and change nothing
      --cleanup                     remove ward's rules and chains
  -h, --help                        show this help

LIST is comma-separated. Exit status: 0 applied, 1 failed (the pod must not start), 2 usage.
`;

export const command: Command = {
  name: 'capture',
  summary: 'Set up iptables traffic capture for the sidecar (init container)',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      'inbound-port': { type: 'string' },
      'outbound-port': { type: 'string' },
      'no-outbound': { type: 'boolean' },
      'proxy-uid': { type: 'string' },
      'proxy-gid': { type: 'string' },
      'inbound-ports': { type: 'string' },
      'exclude-inbound-ports': { type: 'string' },
      'exclude-outbound-ports': { type: 'string' },
      'exclude-outbound-cidrs': { type: 'string' },
      ipv6: { type: 'string' },
      'dry-run': { type: 'boolean' },
      cleanup: { type: 'boolean' },
    });
    const int = (name: string, raw: string | undefined, fallback: number): number => {
      if (raw === undefined) return fallback;
      if (!/^\d+$/.test(raw)) throw new UsageError(`--${name} must be a number, got '${raw}'`);
      return Number(raw);
    };
    const list = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    };
    const ipv6 = values.ipv6 ?? 'auto';
    if (ipv6 !== 'auto' && ipv6 !== 'on' && ipv6 !== 'off') throw new UsageError(`--ipv6 must be auto, on or off, got '${ipv6}'`);
    if (values['no-outbound'] === true && values['outbound-port'] !== undefined) throw new UsageError('--no-outbound and --outbound-port exclude each other');
    const inboundRaw = values['inbound-ports'] ?? '*';
    const opts: CaptureOptions = {
      inboundPort: int('inbound-port', values['inbound-port'], 15006),
      outboundPort: values['no-outbound'] === true ? null : int('outbound-port', values['outbound-port'], 15001),
      proxyUid: int('proxy-uid', values['proxy-uid'], 1337),
      proxyGid: int('proxy-gid', values['proxy-gid'], 1337),
      inboundPorts: inboundRaw.trim() === '*' ? '*' : list(() => parsePortList(inboundRaw, '--inbound-ports')),
      excludeInboundPorts: list(() => parsePortList(values['exclude-inbound-ports'] ?? '', '--exclude-inbound-ports')),
      excludeOutboundPorts: list(() => parsePortList(values['exclude-outbound-ports'] ?? '', '--exclude-outbound-ports')),
      excludeOutboundCidrs: list(() => parseCidrList(values['exclude-outbound-cidrs'] ?? '', '--exclude-outbound-cidrs')),
    };
    const problems = validateCaptureOptions(opts);
    if (opts.inboundPorts !== '*' && opts.inboundPorts.length === 0) problems.push('--inbound-ports: list at least one port, or *');
    if (problems.length > 0) throw new UsageError(problems.join('; '));

    if (values['dry-run'] === true) {
      process.stdout.write(`# ward capture: iptables-restore --noflush input (IPv4)\n${captureRules(opts, 'ipv4')}`);
      if (ipv6 !== 'off') process.stdout.write(`# ward capture: ip6tables-restore --noflush input (IPv6)\n${captureRules(opts, 'ipv6')}`);
      if (ipv6 === 'auto') process.stdout.write(`# ward capture: ip6tables-restore --noflush input (IPv6, when the nat table is unusable)\n${ipv6FilterRules(opts)}`);
      return 0;
    }
    if (values.cleanup === true) {
      await removeCapture(runCommand, 'ipv4');
      if (ipv6 !== 'off') await removeCapture(runCommand, 'ipv6');
      process.stdout.write('ward capture: rules removed\n');
      return 0;
    }
    const results = await applyCapture(opts, runCommand, ipv6);
    for (const r of results) {
      process.stdout.write(r.applied ? `ward capture: ${r.family} rules applied\n` : `ward capture: ${r.family} skipped: ${r.note ?? ''}\n`);
    }
    return 0;
  },
};

/** Spawns a command, feeds it stdin, and collects its output; a missing binary is code 127. */
const runCommand: CommandRunner = (cmd, args, stdin) =>
  new Promise((resolve) => {
    const child = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => resolve({ code: 127, stdout, stderr: `${cmd}: ${err.message}` }));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.on('error', () => {});
    child.stdin.end(stdin ?? '');
  });
