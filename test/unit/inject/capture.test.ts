import { describe, expect, it } from 'vitest';
import {
  applyCapture,
  type CaptureOptions,
  captureRules,
  cidrFamily,
  type CommandRunner,
  hasIpv6Address,
  ipv6FilterRules,
  parseCidrList,
  parsePortList,
  validateCaptureOptions,
} from '../../../src/inject/capture.ts';

const base: CaptureOptions = {
  inboundPort: 15006,
  outboundPort: 15001,
  proxyUid: 1337,
  proxyGid: 1337,
  inboundPorts: '*',
  excludeInboundPorts: [15000],
  excludeOutboundPorts: [53],
  excludeOutboundCidrs: [],
};

const ruleLines = (text: string): string[] => text.split('\n').filter((l) => l.startsWith('-A '));

describe('captureRules', () => {
  it('renders the default rules in iptables-restore format', () => {
    expect(captureRules(base, 'ipv4')).toBe(
      [
        '*nat',
        ':WARD_INBOUND - [0:0]',
        ':WARD_IN_REDIRECT - [0:0]',
        ':WARD_OUTPUT - [0:0]',
        ':WARD_REDIRECT - [0:0]',
        '-A PREROUTING -p tcp -j WARD_INBOUND',
        '-A WARD_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
        '-A WARD_INBOUND -p tcp --dport 15000 -j RETURN',
        '-A WARD_INBOUND -p tcp -j WARD_IN_REDIRECT',
        '-A OUTPUT -p tcp -j WARD_OUTPUT',
        '-A WARD_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
        '-A WARD_OUTPUT -m owner --uid-owner 1337 -j RETURN',
        '-A WARD_OUTPUT -m owner --gid-owner 1337 -j RETURN',
        '-A WARD_OUTPUT -o lo -j RETURN',
        '-A WARD_OUTPUT -d 127.0.0.1/32 -j RETURN',
        '-A WARD_OUTPUT -p tcp --dport 53 -j RETURN',
        '-A WARD_OUTPUT -j WARD_REDIRECT',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('exempts the sidecar uid before anything is redirected (no loop)', () => {
    const out = ruleLines(captureRules({ ...base, proxyUid: 2000, proxyGid: 2001 }, 'ipv4')).filter((l) => l.startsWith('-A WARD_OUTPUT'));
    expect(out[0]).toBe('-A WARD_OUTPUT -m owner --uid-owner 2000 -j RETURN');
    expect(out[1]).toBe('-A WARD_OUTPUT -m owner --gid-owner 2001 -j RETURN');
    expect(out.at(-1)).toBe('-A WARD_OUTPUT -j WARD_REDIRECT');
  });

  it('captures only the listed inbound ports, after the exclusions', () => {
    const lines = ruleLines(captureRules({ ...base, inboundPorts: [8080, 80, 8080], excludeInboundPorts: [15000, 9464] }, 'ipv4')).filter((l) => l.startsWith('-A WARD_INBOUND'));
    expect(lines).toEqual([
      '-A WARD_INBOUND -p tcp --dport 9464 -j RETURN',
      '-A WARD_INBOUND -p tcp --dport 15000 -j RETURN',
      '-A WARD_INBOUND -p tcp --dport 80 -j WARD_IN_REDIRECT',
      '-A WARD_INBOUND -p tcp --dport 8080 -j WARD_IN_REDIRECT',
    ]);
  });

  it('gives each family its own CIDRs and loopback', () => {
    const o = { ...base, excludeOutboundCidrs: ['10.96.0.0/12', 'fd00::/8', '192.168.1.10'] };
    const v4 = captureRules(o, 'ipv4');
    const v6 = captureRules(o, 'ipv6');
    expect(v4).toContain('-A WARD_OUTPUT -d 10.96.0.0/12 -j RETURN');
    expect(v4).toContain('-A WARD_OUTPUT -d 192.168.1.10 -j RETURN');
    expect(v4).not.toContain('fd00::/8');
    expect(v6).toContain('-A WARD_OUTPUT -d fd00::/8 -j RETURN');
    expect(v6).toContain('-A WARD_OUTPUT -d ::1/128 -j RETURN');
    expect(v6).not.toContain('10.96.0.0/12');
  });

  it('refuses in the IPv6 filter table exactly what the nat rules would redirect (no ip6table_nat)', () => {
    const o = { ...base, excludeOutboundCidrs: ['10.96.0.0/12', 'fd00::/8'] };
    expect(ipv6FilterRules(o)).toBe(
      [
        '*filter',
        ':WARD_IN_FILTER - [0:0]',
        ':WARD_OUT_FILTER - [0:0]',
        '-I INPUT -p tcp -j WARD_IN_FILTER',
        '-A WARD_IN_FILTER -i lo -j RETURN',
        '-A WARD_IN_FILTER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
        '-A WARD_IN_FILTER -p tcp --dport 15000 -j RETURN',
        '-A WARD_IN_FILTER -p tcp -j REJECT --reject-with tcp-reset',
        '-I OUTPUT -p tcp -j WARD_OUT_FILTER',
        '-A WARD_OUT_FILTER -o lo -j RETURN',
        '-A WARD_OUT_FILTER -m owner --uid-owner 1337 -j RETURN',
        '-A WARD_OUT_FILTER -m owner --gid-owner 1337 -j RETURN',
        '-A WARD_OUT_FILTER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
        '-A WARD_OUT_FILTER -p tcp --dport 53 -j RETURN',
        '-A WARD_OUT_FILTER -d fd00::/8 -j RETURN',
        '-A WARD_OUT_FILTER -p tcp -j REJECT --reject-with tcp-reset',
        'COMMIT',
        '',
      ].join('\n'),
    );
    // a list of inbound ports: only those are refused; no egress port: outbound left alone
    const listed = ipv6FilterRules({ ...base, outboundPort: null, inboundPorts: [8080] });
    expect(ruleLines(listed).at(-1)).toBe('-A WARD_IN_FILTER -p tcp --dport 8080 -j REJECT --reject-with tcp-reset');
    expect(listed).not.toContain('OUTPUT');
  });

  it('leaves outbound traffic alone without an egress port', () => {
    const text = captureRules({ ...base, outboundPort: null }, 'ipv4');
    expect(text).not.toContain('OUTPUT');
    expect(text).not.toContain('WARD_REDIRECT');
    expect(text).toContain('-A PREROUTING -p tcp -j WARD_INBOUND');
  });
});

describe('capture option checks', () => {
  it('accepts the defaults and refuses bad ports, uid 0, gid 0 and bad CIDRs', () => {
    expect(validateCaptureOptions(base)).toEqual([]);
    expect(validateCaptureOptions({ ...base, inboundPort: 0 }).join()).toContain('inbound port');
    expect(validateCaptureOptions({ ...base, proxyUid: 0 }).join()).toContain('every root process');
    // regression: `--gid-owner 0 -j RETURN` exempted root and every container without runAsGroup
    expect(validateCaptureOptions({ ...base, proxyGid: 0 }).join()).toContain('proxy gid: 0 would exempt every process of group 0');
    expect(validateCaptureOptions({ ...base, outboundPort: 15006 }).join()).toContain('must differ');
    expect(validateCaptureOptions({ ...base, excludeOutboundCidrs: ['10.0.0.0/33'] }).join()).toContain('10.0.0.0/33');
  });

  it('parses port and CIDR lists', () => {
    expect(parsePortList(' 80, 443,80 ,', 'x')).toEqual([80, 443]);
    expect(parsePortList('', 'x')).toEqual([]);
    expect(() => parsePortList('80,http', 'ports')).toThrow("ports: 'http'");
    expect(() => parsePortList('70000', 'ports')).toThrow('70000');
    expect(parseCidrList('10.0.0.0/8, ::1/128', 'c')).toEqual(['10.0.0.0/8', '::1/128']);
    expect(() => parseCidrList('10.0.0.0/8/1', 'cidrs')).toThrow('10.0.0.0/8/1');
    expect(cidrFamily('2001:db8::/32')).toBe('ipv6');
    expect(cidrFamily('10.1.2.3')).toBe('ipv4');
    expect(cidrFamily('10.1.2.3/x')).toBeNull();
    expect(cidrFamily('example.com/8')).toBeNull();
  });
});

describe('applyCapture', () => {
  function fakeRunner(fail: (cmd: string, args: readonly string[]) => boolean = () => false): { run: CommandRunner; calls: { cmd: string; args: readonly string[]; stdin?: string }[] } {
    const calls: { cmd: string; args: readonly string[]; stdin?: string }[] = [];
    const run: CommandRunner = async (cmd, args, stdin) => {
      calls.push({ cmd, args, ...(stdin === undefined ? {} : { stdin }) });
      // `-D` of a missing jump fails, as in real iptables
      if (args.includes('-D') || fail(cmd, args)) return { code: 1, stdout: '', stderr: 'no such rule' };
      return { code: 0, stdout: '', stderr: '' };
    };
    return { run, calls };
  }

  it('removes earlier ward rules, then restores without flushing other rules, per family', async () => {
    const { run, calls } = fakeRunner();
    const results = await applyCapture(base, run, 'auto');
    expect(results).toEqual([{ family: 'ipv4', applied: true }, { family: 'ipv6', applied: true }]);
    const restores = calls.filter((c) => c.cmd.endsWith('-restore'));
    expect(restores.map((c) => [c.cmd, c.args])).toEqual([['iptables-restore', ['--noflush']], ['ip6tables-restore', ['--noflush']]]);
    expect(restores[0]?.stdin).toBe(captureRules(base, 'ipv4'));
    expect(restores[1]?.stdin).toBe(captureRules(base, 'ipv6'));
    // cleanup ran before the restore
    const firstRestore = calls.findIndex((c) => c.cmd === 'iptables-restore');
    expect(calls.slice(0, firstRestore).some((c) => c.args.join(' ') === '-t nat -D PREROUTING -p tcp -j WARD_INBOUND')).toBe(true);
    expect(calls.slice(0, firstRestore).some((c) => c.args.join(' ') === '-t nat -X WARD_OUTPUT')).toBe(true);
  });

  it('without an ip6tables nat table, auto refuses in the filter table what it would redirect; on fails', async () => {
    const noNat = (cmd: string, args: readonly string[]): boolean => cmd === 'ip6tables' && args.join(' ') === '-t nat -S';
    const auto = fakeRunner(noNat);
    const results = await applyCapture(base, auto.run, 'auto', () => true);
    expect(results[1]).toMatchObject({ family: 'ipv6', applied: false, note: expect.stringContaining('refused instead (filter table)') });
    const restores = auto.calls.filter((c) => c.cmd === 'ip6tables-restore');
    expect(restores).toEqual([{ cmd: 'ip6tables-restore', args: ['--noflush'], stdin: ipv6FilterRules(base) }]);
    // an earlier run's filter jumps and chains are removed first
    const before = auto.calls.slice(0, auto.calls.indexOf(restores[0]!)).map((c) => `${c.cmd} ${c.args.join(' ')}`);
    expect(before).toEqual(expect.arrayContaining(['ip6tables -t filter -D INPUT -p tcp -j WARD_IN_FILTER', 'ip6tables -t filter -X WARD_OUT_FILTER']));
    await expect(applyCapture(base, fakeRunner(noNat).run, 'on')).rejects.toThrow('ip6tables nat table unusable');
    const off = fakeRunner();
    expect(await applyCapture(base, off.run, 'off')).toEqual([{ family: 'ipv4', applied: true }]);
    expect(off.calls.some((c) => c.cmd.startsWith('ip6tables'))).toBe(false);
  });

  it('fails when neither ip6tables table is usable and the pod has an IPv6 address, link-local included (regression)', async () => {
    const noV6 = (cmd: string, args: readonly string[]): boolean => (cmd === 'ip6tables' && args.join(' ') === '-t nat -S') || cmd === 'ip6tables-restore';
    await expect(applyCapture(base, fakeRunner(noV6).run, 'auto', () => true)).rejects.toThrow('the pod has an IPv6 address (link-local counts) but neither the ip6tables nat table');
    // no IPv6 address but loopback (or no IPv6 at all): nothing to reach the app on
    expect((await applyCapture(base, fakeRunner(noV6).run, 'auto', () => false))[1]).toMatchObject({ family: 'ipv6', applied: false });
  });

  it('a usable nat table also removes an earlier run\'s filter-table fallback', async () => {
    const { run, calls } = fakeRunner();
    await applyCapture(base, run, 'auto');
    const restore = calls.findIndex((c) => c.cmd === 'ip6tables-restore');
    expect(calls.slice(0, restore).some((c) => c.cmd === 'ip6tables' && c.args.join(' ') === '-t filter -X WARD_IN_FILTER')).toBe(true);
  });

  it('hasIpv6Address reads /proc/net/if_inet6: any scope but host (::1) counts, link-local included', () => {
    const lo = '00000000000000000000000000000001 01 80 10 80       lo\n';
    const linkLocal = 'fe80000000000000ac1f6bfffe2c1a2b 02 40 20 80     eth0\n';
    const global = '20010db8000000000000000000000042 02 40 00 00     eth0\n';
    expect(hasIpv6Address(() => lo)).toBe(false);
    expect(hasIpv6Address(() => lo + linkLocal)).toBe(true);
    expect(hasIpv6Address(() => lo + linkLocal + global)).toBe(true);
    expect(
      hasIpv6Address(() => {
        throw new Error('ENOENT');
      }),
    ).toBe(false);
  });

  it('fails (so the pod does not start uncaptured) when iptables-restore fails', async () => {
    const { run } = fakeRunner((cmd) => cmd === 'iptables-restore');
    await expect(applyCapture(base, run, 'off')).rejects.toThrow('iptables-restore failed');
  });

  it('refuses invalid options before running anything', async () => {
    const { run, calls } = fakeRunner();
    await expect(applyCapture({ ...base, proxyUid: 0 }, run, 'auto')).rejects.toThrow('uid');
    await expect(applyCapture({ ...base, proxyGid: 0 }, run, 'auto')).rejects.toThrow('gid');
    expect(calls).toEqual([]);
  });
});
