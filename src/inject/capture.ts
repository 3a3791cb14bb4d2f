import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';

/**
 * Traffic capture: the iptables (nat table) rules the init container installs in the pod's
 * network namespace, as `iptables-restore` input (for IPv6 without a nat table, filter-table
 * rules that refuse instead: `ipv6FilterRules`). Generating them is pure; applying them is
 * `applyCapture` with an injected command runner.
 *
 *   PREROUTING -tcp-> WARD_INBOUND - excluded port? RETURN - captured port -> WARD_IN_REDIRECT (REDIRECT -> inbound listener)
 *   OUTPUT     -tcp-> WARD_OUTPUT  - sidecar uid/gid? RETURN (no loop) - loopback? RETURN
 *                                   - excluded port/CIDR? RETURN -> WARD_REDIRECT (REDIRECT -> egress listener)
 *
 * The sidecar's own connections (to the app on 127.0.0.1, to IdPs, to the control plane, to
 * other services after a token exchange) are recognised by its uid (`-m owner --uid-owner`,
 * Istio's 1337 convention), so they are never captured again.
 */

export type Family = 'ipv4' | 'ipv6';

export interface CaptureOptions {
  /** Sidecar inbound listener: captured inbound TCP is redirected here. */
  readonly inboundPort: number;
  /** Sidecar egress listener; null leaves outbound traffic alone. */
  readonly outboundPort: number | null;
  /** The sidecar's uid and gid: its own traffic is never redirected. */
  readonly proxyUid: number;
  readonly proxyGid: number;
  /** Inbound ports to capture: '*' for every port, or a list. */
  readonly inboundPorts: '*' | readonly number[];
  /** Inbound ports never captured (the admin port belongs here, for kubelet probes). */
  readonly excludeInboundPorts: readonly number[];
  readonly excludeOutboundPorts: readonly number[];
  /** IPv4 and IPv6 CIDRs never redirected outbound; each family's rules take its own. */
  readonly excludeOutboundCidrs: readonly string[];
}

export const CHAINS = { inbound: 'WARD_INBOUND', inRedirect: 'WARD_IN_REDIRECT', output: 'WARD_OUTPUT', redirect: 'WARD_REDIRECT' } as const;

/** The IPv6 filter-table chains installed when ip6tables' nat table is unusable (`ipv6FilterRules`). */
export const FILTER_CHAINS = { inbound: 'WARD_IN_FILTER', output: 'WARD_OUT_FILTER' } as const;

/** Problems with the options (empty when valid). Ports 1..65535, uid and gid >= 1, CIDRs well-formed. */
export function validateCaptureOptions(o: CaptureOptions): string[] {
  const problems: string[] = [];
  const port = (p: number, what: string): void => {
    if (!Number.isInteger(p) || p < 1 || p > 65535) problems.push(`${what}: ${p} is not a TCP port (1-65535)`);
  };
  port(o.inboundPort, 'inbound port');
  if (o.outboundPort !== null) port(o.outboundPort, 'outbound port');
  if (!Number.isInteger(o.proxyUid) || o.proxyUid < 0) problems.push(`proxy uid: ${o.proxyUid} is not a uid`);
  if (!Number.isInteger(o.proxyGid) || o.proxyGid < 0) problems.push(`proxy gid: ${o.proxyGid} is not a gid`);
  if (o.proxyUid === 0) problems.push('proxy uid: 0 would exempt every root process from capture');
  // `--gid-owner 0 -j RETURN` exempts every process whose (fs)gid is 0: root, and every container
  // that sets runAsUser without runAsGroup (the runtime's default group is 0). Found in review.
  if (o.proxyGid === 0) problems.push('proxy gid: 0 would exempt every process of group 0 (root, and any container without runAsGroup) from capture');
  if (o.inboundPorts !== '*') for (const p of o.inboundPorts) port(p, 'inbound ports');
  for (const p of o.excludeInboundPorts) port(p, 'excluded inbound ports');
  for (const p of o.excludeOutboundPorts) port(p, 'excluded outbound ports');
  for (const c of o.excludeOutboundCidrs) if (cidrFamily(c) === null) problems.push(`excluded outbound CIDRs: '${c}' is not an IPv4 or IPv6 CIDR`);
  if (o.outboundPort !== null && o.outboundPort === o.inboundPort) problems.push('the inbound and outbound ports must differ');
  return problems;
}

/** The family of `a.b.c.d/n` or `x::y/n` (a bare address counts as a host route), or null. */
export function cidrFamily(cidr: string): Family | null {
  const [addr, prefix, extra] = cidr.split('/');
  if (addr === undefined || extra !== undefined) return null;
  const family: Family | null = isIPv4(addr) ? 'ipv4' : isIPv6(addr) ? 'ipv6' : null;
  if (family === null) return null;
  if (prefix === undefined) return family;
  if (!/^\d{1,3}$/.test(prefix)) return null;
  return Number(prefix) <= (family === 'ipv4' ? 32 : 128) ? family : null;
}

/** Parses `80,443, 8080` into ports; '' -> []. Throws with the offending item. */
export function parsePortList(value: string, what: string): number[] {
  const out: number[] = [];
  for (const raw of value.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    if (!/^\d{1,5}$/.test(item) || Number(item) < 1 || Number(item) > 65535) throw new Error(`${what}: '${item}' is not a TCP port (1-65535)`);
    out.push(Number(item));
  }
  return [...new Set(out)];
}

/** Parses a comma-separated CIDR list; throws with the offending item. */
export function parseCidrList(value: string, what: string): string[] {
  const out: string[] = [];
  for (const raw of value.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    if (cidrFamily(item) === null) throw new Error(`${what}: '${item}' is not an IPv4 or IPv6 CIDR`);
    out.push(item);
  }
  return [...new Set(out)];
}

/**
 * The nat-table rules for one family, in `iptables-restore --noflush` format: declaring the
 * ward chains flushes them, the two jumps from the built-in chains are appended once
 * (`applyCapture` removes earlier ones first), and COMMIT applies all or nothing.
 */
export function captureRules(o: CaptureOptions, family: Family): string {
  const loopback = family === 'ipv4' ? '127.0.0.1/32' : '::1/128';
  const lines: string[] = ['*nat'];
  for (const c of [CHAINS.inbound, CHAINS.inRedirect, ...(o.outboundPort === null ? [] : [CHAINS.output, CHAINS.redirect])]) {
    lines.push(`:${c} - [0:0]`);
  }

  // Inbound: every TCP packet arriving on an interface (PREROUTING never sees the pod's own
  // loopback traffic, so the sidecar's call to the app on 127.0.0.1 is not caught here).
  lines.push(`-A PREROUTING -p tcp -j ${CHAINS.inbound}`);
  lines.push(`-A ${CHAINS.inRedirect} -p tcp -j REDIRECT --to-ports ${o.inboundPort}`);
  // Excluded ports first: RETURN ends the chain before the capture rules below.
  for (const p of uniqueSorted(o.excludeInboundPorts)) lines.push(`-A ${CHAINS.inbound} -p tcp --dport ${p} -j RETURN`);
  if (o.inboundPorts === '*') {
    lines.push(`-A ${CHAINS.inbound} -p tcp -j ${CHAINS.inRedirect}`);
  } else {
    for (const p of uniqueSorted(o.inboundPorts)) lines.push(`-A ${CHAINS.inbound} -p tcp --dport ${p} -j ${CHAINS.inRedirect}`);
  }

  if (o.outboundPort !== null) {
    lines.push(`-A OUTPUT -p tcp -j ${CHAINS.output}`);
    lines.push(`-A ${CHAINS.redirect} -p tcp -j REDIRECT --to-ports ${o.outboundPort}`);
    // The sidecar's own traffic first: redirecting it to itself would loop forever.
    lines.push(`-A ${CHAINS.output} -m owner --uid-owner ${o.proxyUid} -j RETURN`);
    lines.push(`-A ${CHAINS.output} -m owner --gid-owner ${o.proxyGid} -j RETURN`);
    // Loopback: app <-> sidecar and app <-> itself inside the pod are not egress.
    lines.push(`-A ${CHAINS.output} -o lo -j RETURN`);
    lines.push(`-A ${CHAINS.output} -d ${loopback} -j RETURN`);
    for (const p of uniqueSorted(o.excludeOutboundPorts)) lines.push(`-A ${CHAINS.output} -p tcp --dport ${p} -j RETURN`);
    for (const c of o.excludeOutboundCidrs) if (cidrFamily(c) === family) lines.push(`-A ${CHAINS.output} -d ${c} -j RETURN`);
    lines.push(`-A ${CHAINS.output} -j ${CHAINS.redirect}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * IPv6 without a nat table (a node without `ip6table_nat`): what `captureRules` would redirect is
 * refused instead, in the filter table, as `ip6tables-restore --noflush` input. Every pod with
 * IPv6 on has a link-local address its L2 neighbours (the node, pods on a bridge CNI) can reach,
 * so leaving IPv6 alone would let them reach an app listening on `::` with no token (found in
 * review). Istio's istio-iptables does the same when it does not capture IPv6.
 *
 *   INPUT  -tcp-> WARD_IN_FILTER  - loopback, established? RETURN - excluded port? RETURN - captured port -> REJECT
 *   OUTPUT -tcp-> WARD_OUT_FILTER - loopback, sidecar uid/gid, established? RETURN - excluded port/CIDR? RETURN -> REJECT
 *
 * Only new connections are refused: replies to the sidecar's own connections, and to those made
 * to an excluded port (the admin port, for kubelet probes), are established. The jumps are
 * inserted first in INPUT and OUTPUT, so an ACCEPT of the pod's own cannot come before them.
 * TCP only, like the nat rules: ICMPv6 (neighbour discovery) keeps working.
 */
export function ipv6FilterRules(o: CaptureOptions): string {
  const reject = '-p tcp -j REJECT --reject-with tcp-reset';
  const established = '-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN';
  const lines: string[] = ['*filter'];
  for (const c of [FILTER_CHAINS.inbound, ...(o.outboundPort === null ? [] : [FILTER_CHAINS.output])]) lines.push(`:${c} - [0:0]`);

  lines.push(`-I INPUT -p tcp -j ${FILTER_CHAINS.inbound}`);
  lines.push(`-A ${FILTER_CHAINS.inbound} -i lo -j RETURN`);
  lines.push(`-A ${FILTER_CHAINS.inbound} ${established}`);
  for (const p of uniqueSorted(o.excludeInboundPorts)) lines.push(`-A ${FILTER_CHAINS.inbound} -p tcp --dport ${p} -j RETURN`);
  if (o.inboundPorts === '*') lines.push(`-A ${FILTER_CHAINS.inbound} ${reject}`);
  else for (const p of uniqueSorted(o.inboundPorts)) lines.push(`-A ${FILTER_CHAINS.inbound} -p tcp --dport ${p} -j REJECT --reject-with tcp-reset`);

  if (o.outboundPort !== null) {
    lines.push(`-I OUTPUT -p tcp -j ${FILTER_CHAINS.output}`);
    lines.push(`-A ${FILTER_CHAINS.output} -o lo -j RETURN`);
    // The sidecar's own calls (IdP, control plane, exchanged-token calls) may use IPv6.
    lines.push(`-A ${FILTER_CHAINS.output} -m owner --uid-owner ${o.proxyUid} -j RETURN`);
    lines.push(`-A ${FILTER_CHAINS.output} -m owner --gid-owner ${o.proxyGid} -j RETURN`);
    lines.push(`-A ${FILTER_CHAINS.output} ${established}`);
    for (const p of uniqueSorted(o.excludeOutboundPorts)) lines.push(`-A ${FILTER_CHAINS.output} -p tcp --dport ${p} -j RETURN`);
    for (const c of o.excludeOutboundCidrs) if (cidrFamily(c) === 'ipv6') lines.push(`-A ${FILTER_CHAINS.output} -d ${c} -j RETURN`);
    lines.push(`-A ${FILTER_CHAINS.output} ${reject}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

function uniqueSorted(ports: readonly number[]): number[] {
  return [...new Set(ports)].sort((a, b) => a - b);
}

/** Runs one command; resolves with its exit code and output (never rejects on a non-zero exit). */
export type CommandRunner = (cmd: string, args: readonly string[], stdin?: string) => Promise<{ code: number; stdout: string; stderr: string }>;

export interface ApplyResult {
  readonly family: Family;
  readonly applied: boolean;
  /** Why a family was skipped (ipv6 unavailable in auto mode). */
  readonly note?: string;
}

const BINARIES: Record<Family, { iptables: string; restore: string }> = {
  ipv4: { iptables: 'iptables', restore: 'iptables-restore' },
  ipv6: { iptables: 'ip6tables', restore: 'ip6tables-restore' },
};

/**
 * Whether the namespace has an IPv6 address other than loopback, from `/proc/net/if_inet6` (one
 * address per line: hex address, interface index, prefix length, scope, flags, name; scope 10 is
 * host, that is ::1). Link-local (scope 20) counts: the pod's L2 neighbours reach it. Unreadable
 * (no IPv6 in the kernel): false.
 */
export function hasIpv6Address(read: () => string = () => readFileSync('/proc/net/if_inet6', 'utf8')): boolean {
  let text: string;
  try {
    text = read();
  } catch {
    return false;
  }
  return text.split('\n').some((line) => {
    const scope = line.trim().split(/\s+/)[3];
    return scope !== undefined && scope !== '10';
  });
}

/**
 * Installs the rules: removes ward's chains and jumps from an earlier run (an init container
 * can run again in the same network namespace), then `iptables-restore --noflush`, which
 * leaves every other rule of the pod alone. IPv6: 'auto' applies the nat rules when ip6tables'
 * nat table is usable; otherwise it refuses in the filter table what they would have redirected
 * (`ipv6FilterRules`), and fails if even that cannot be installed while the pod has an IPv6
 * address other than loopback. 'on' makes an unusable nat table a failure; 'off' leaves IPv6 alone.
 */
export async function applyCapture(o: CaptureOptions, run: CommandRunner, ipv6: 'auto' | 'on' | 'off', ipv6Address: () => boolean = hasIpv6Address): Promise<ApplyResult[]> {
  const problems = validateCaptureOptions(o);
  if (problems.length > 0) throw new Error(problems.join('; '));
  const results: ApplyResult[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    if (family === 'ipv6' && ipv6 === 'off') continue;
    const bin = BINARIES[family];
    if (family === 'ipv6') {
      const probe = await run(bin.iptables, ['-t', 'nat', '-S']).catch((err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }));
      if (probe.code !== 0) {
        const why = probe.stderr.trim();
        if (ipv6 === 'on') throw new Error(`ip6tables nat table unusable: ${why}`);
        await removeCapture(run, family);
        const r = await run(bin.restore, ['--noflush'], ipv6FilterRules(o));
        if (r.code === 0) {
          results.push({ family, applied: false, note: `ip6tables nat table unusable (${why}): IPv6 not captured; what it would redirect is refused instead (filter table)` });
          continue;
        }
        // Every pod with IPv6 on has at least a link-local address, which its L2 neighbours
        // reach: fail closed rather than leave the app open on it (found in review). `--ipv6 off`
        // says the skip is meant.
        if (ipv6Address()) {
          throw new Error(`the pod has an IPv6 address (link-local counts) but neither the ip6tables nat table (${why}) nor its filter table (${r.stderr.trim()}) is usable, so IPv6 would reach the app around the sidecar; --ipv6 off to capture IPv4 only`);
        }
        results.push({ family, applied: false, note: `ip6tables unusable and no IPv6 address but loopback, IPv6 not captured: ${why}` });
        continue;
      }
    }
    await removeCapture(run, family);
    const r = await run(bin.restore, ['--noflush'], captureRules(o, family));
    if (r.code !== 0) throw new Error(`${bin.restore} failed (exit ${r.code}): ${r.stderr.trim()}`);
    results.push({ family, applied: true });
  }
  return results;
}

/** Removes ward's jumps and chains (idempotent: missing ones are fine). */
export async function removeCapture(run: CommandRunner, family: Family): Promise<void> {
  const ipt = BINARIES[family].iptables;
  const jumps: [string, string][] = [['PREROUTING', CHAINS.inbound], ['OUTPUT', CHAINS.output]];
  for (const [from, to] of jumps) {
    // A jump may have been added more than once by hand; bounded, so a broken iptables cannot spin.
    for (let i = 0; i < 16; i++) {
      const r = await run(ipt, ['-t', 'nat', '-D', from, '-p', 'tcp', '-j', to]);
      if (r.code !== 0) break;
    }
  }
  for (const c of [CHAINS.inbound, CHAINS.inRedirect, CHAINS.output, CHAINS.redirect]) {
    await run(ipt, ['-t', 'nat', '-F', c]);
    await run(ipt, ['-t', 'nat', '-X', c]);
  }
  if (family !== 'ipv6') return;
  // The filter-table fallback (`ipv6FilterRules`), from a run on a node without ip6table_nat.
  const filterJumps: [string, string][] = [['INPUT', FILTER_CHAINS.inbound], ['OUTPUT', FILTER_CHAINS.output]];
  for (const [from, to] of filterJumps) {
    for (let i = 0; i < 16; i++) {
      const r = await run(ipt, ['-t', 'filter', '-D', from, '-p', 'tcp', '-j', to]);
      if (r.code !== 0) break;
    }
  }
  for (const c of [FILTER_CHAINS.inbound, FILTER_CHAINS.output]) {
    await run(ipt, ['-t', 'filter', '-F', c]);
    await run(ipt, ['-t', 'filter', '-X', c]);
  }
}
