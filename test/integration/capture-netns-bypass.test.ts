import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { injectPod } from '../../src/inject/pod.ts';
import { defaultSettings } from '../../src/inject/settings.ts';
import { inNs, must, netnsPair, run, type Run, waitFor } from './netns.ts';

/**
 * Ways around traffic capture, for real, in Linux network namespaces (root required; CI runs as
 * root), each found in review:
 *
 *   client netns 10.X.Y.1 + fe80::a ──veth── 10.X.Y.2 + fe80::b  pod netns
 *   HTTP :9000 on :: (the outside)                                app on :::8080, "admin" on :::15000
 *
 * - A node without `ip6table_nat` (what `--ipv6 auto` exists for): every pod with IPv6 on has a
 *   link-local address its L2 neighbours reach, and an app listening on `::` (Node's, Go's and
 *   Java's default) answered them with no token while ward-init exited 0. Now what the nat rules
 *   would redirect is refused in the filter table; where even that is impossible, ward-init fails.
 * - A process of the app with the sidecar's gid as a supplementary group (`fsGroup` or
 *   `supplementalGroups: [1337]`) makes a setgid-1337 copy of a program and goes out around the
 *   egress listener: the injector refuses such pods (this shows why).
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WARD = join(ROOT, 'bin/ward.js');
const NODE = process.execPath;
const NET_PAIR = netnsPair('wb');
const NS_C = NET_PAIR.client;
const NS_P = NET_PAIR.pod;
const VETH_C = NET_PAIR.vethClient;
const VETH_P = NET_PAIR.vethPod;
const CLIENT_IP = NET_PAIR.clientIp;
const POD_IP = NET_PAIR.podIp;

const children: ChildProcess[] = [];
/** A node:http server in a namespace that logs `HIT <port>` per request. */
async function serve(ns: string, ports: readonly number[], host: string): Promise<string[]> {
  const script = `for (const port of ${JSON.stringify(ports)}) require('node:http').createServer((q, s) => { console.log('HIT ' + port); s.end('reached ' + port); }).listen(port, '${host}', () => console.log('listening ' + port));`;
  const proc = spawn('ip', inNs(ns, [NODE, '-e', script]), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const lines: string[] = [];
  proc.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter((l) => l !== '')));
  await waitFor(`servers on ${ports.join(', ')} in ${ns}`, () => ports.every((p) => lines.includes(`listening ${p}`)));
  return lines;
}
const hits = (lines: readonly string[], port: number): number => lines.filter((l) => l === `HIT ${port}`).length;

/** The interface's link-local address once duplicate address detection is over. */
async function linkLocal(ns: string, dev: string): Promise<string> {
  let addr = '';
  await waitFor(`a usable link-local address on ${dev}`, async () => {
    const r = await run('ip', inNs(ns, ['ip', '-6', '-o', 'addr', 'show', 'dev', dev, 'scope', 'link']));
    const m = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(r.stdout);
    if (m === null || r.stdout.includes('tentative')) return false;
    addr = m[1]!;
    return true;
  });
  return addr;
}

/** curl in a namespace (optionally as uid/gid 1000 or 1337): the body, '' when it got no answer. */
async function curl(ns: string, url: string, as?: number): Promise<string> {
  const who = as === undefined ? [] : ['setpriv', `--reuid=${as}`, `--regid=${as}`, '--clear-groups'];
  return (await run('ip', inNs(ns, [...who, 'curl', '-g', '-s', '-m', '3', url]))).stdout;
}

let dir = '';
let noNat = '';
let noV6 = '';
let realIp6tables = '';
const scratchDirs: string[] = [];

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, iptables)');
  await NET_PAIR.up();
  realIp6tables = (await must('sh', ['-c', 'command -v ip6tables'])).stdout.trim();
  dir = mkdtempSync(join(tmpdir(), 'ward-bypass-'));
  // A node whose kernel has no ip6table_nat: the nat table fails as there, the filter table works.
  noNat = join(dir, 'no-nat');
  mkdirSync(noNat);
  const natMissing = "echo \"ip6tables v1.8.9 (legacy): can't initialize ip6tables table \\`nat': Table does not exist (do you need to insmod?)\" >&2; exit 3";
  writeFileSync(join(noNat, 'ip6tables'), `#!/bin/sh\ncase " $* " in *" nat "*) ${natMissing};; esac\nexec ${realIp6tables} "$@"\n`);
  chmodSync(join(noNat, 'ip6tables'), 0o755);
  // ...and one where ip6tables is unusable altogether.
  noV6 = join(dir, 'no-v6');
  mkdirSync(noV6);
  for (const bin of ['ip6tables', 'ip6tables-restore']) {
    writeFileSync(join(noV6, bin), `#!/bin/sh\n${natMissing}\n`);
    chmodSync(join(noV6, bin), 0o755);
  }
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  // Deleting the namespaces takes their iptables rules and the veth pair with them.
  await NET_PAIR.down();
  for (const d of [dir, ...scratchDirs]) if (d !== '') rmSync(d, { recursive: true, force: true });
});

// Each test starts without ward's rules, whatever the one before it left.
beforeEach(async () => {
  await must('ip', inNs(NS_P, [NODE, WARD, 'capture', '--cleanup']));
});

/** `ward <args>` in the pod namespace, with `pathDir` first on PATH. */
function wardInPod(args: readonly string[], pathDir?: string): Promise<Run> {
  const path = `${pathDir === undefined ? '' : `${pathDir}:`}${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  return run('ip', inNs(NS_P, ['env', `PATH=${path}`, NODE, WARD, ...args]));
}

describe('IPv6 on a node without ip6table_nat', () => {
  it('a neighbour cannot reach the app over the pod\'s link-local address; the excluded admin port, loopback and the sidecar\'s own IPv6 calls still work (regression)', async () => {
    const app = await serve(NS_P, [8080, 15000], '::');
    const outside = await serve(NS_C, [9000], '::');
    // The exact command the injector gives ward-init.
    const out = injectPod({ metadata: { name: 'orders', labels: { app: 'orders' } }, spec: { containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 8080 }] }] } }, { namespaceEnabled: true }, defaultSettings());
    if (out.kind !== 'injected') throw new Error(JSON.stringify(out));
    const init = out.template.spec.initContainers!.find((c) => c.name === 'ward-init')!;
    const capture = await wardInPod(init.args ?? [], noNat);
    expect(capture.code, capture.stderr).toBe(0);
    expect(capture.stdout).toContain('ipv6 skipped: ip6tables nat table unusable');

    const podLl = await linkLocal(NS_P, VETH_P);
    const clientLl = await linkLocal(NS_C, VETH_C);
    // IPv4: captured (nothing listens on :15006 here, so the app is out of reach).
    expect(await curl(NS_C, `http://${POD_IP}:8080/`)).toBe('');
    // IPv6 link-local, from the L2 neighbour: refused before the app sees anything.
    expect(await curl(NS_C, `http://[${podLl}%25${VETH_C}]:8080/`), 'the app answered over IPv6 link-local').toBe('');
    expect(hits(app, 8080)).toBe(0);
    // The admin port is excluded from capture: kubelet probes over IPv6 still reach it.
    expect(await curl(NS_C, `http://[${podLl}%25${VETH_C}]:15000/`)).toBe('reached 15000');
    // Loopback inside the pod is not touched.
    expect(await curl(NS_P, 'http://[::1]:8080/', 1000)).toBe('reached 8080');

    // Outbound over IPv6: the app cannot go around the egress listener; the sidecar's uid goes out
    // (its answers come back in as established).
    const outsideUrl = `http://[${clientLl}%25${VETH_P}]:9000/`;
    expect(await curl(NS_P, outsideUrl, 1000), 'the app reached the outside over IPv6').toBe('');
    expect(hits(outside, 9000)).toBe(0);
    expect(await curl(NS_P, outsideUrl, 1337)).toBe('reached 9000');

    // Running it again does not stack the rules; --cleanup removes them.
    expect((await wardInPod(init.args ?? [], noNat)).code).toBe(0);
    const rules = (await must('ip', inNs(NS_P, [realIp6tables, '-t', 'filter', '-S']))).stdout.split('\n');
    expect(rules.filter((l) => l === '-A INPUT -p tcp -j WARD_IN_FILTER')).toHaveLength(1);
    expect(rules.filter((l) => l === '-A OUTPUT -p tcp -j WARD_OUT_FILTER')).toHaveLength(1);
    expect((await wardInPod(['capture', '--cleanup'], noNat)).code).toBe(0);
    expect((await must('ip', inNs(NS_P, [realIp6tables, '-t', 'filter', '-S']))).stdout).not.toContain('WARD_');
    await must('ip', inNs(NS_P, [NODE, WARD, 'capture', '--cleanup']));
  });

  it('ward-init fails (the pod does not start) when neither ip6tables table is usable and the pod has a link-local address', async () => {
    const capture = await wardInPod(['capture', '--exclude-inbound-ports', '15000'], noV6);
    expect(capture.code).toBe(1);
    expect(capture.stderr).toContain('the pod has an IPv6 address (link-local counts)');
    // --ipv6 off still means IPv4 only, ip6tables untouched.
    expect((await wardInPod(['capture', '--ipv6', 'off', '--exclude-inbound-ports', '15000'], noV6)).code).toBe(0);
    await must('ip', inNs(NS_P, [NODE, WARD, 'capture', '--cleanup']));
  });
});

describe('the sidecar\'s uid and gid', () => {
  it('--proxy-gid 0 is refused before any rule is installed (it would exempt every gid-0 process)', async () => {
    const r = await wardInPod(['capture', '--proxy-gid', '0', '--ipv6', 'off']);
    expect(r.code).toBe(2);
    expect((await must('ip', inNs(NS_P, ['iptables', '-t', 'nat', '-S']))).stdout).not.toContain('WARD_');
  });

  it('an app user with gid 1337 as a supplementary group goes around the egress listener with a setgid copy of a program: why the injector refuses fsGroup / supplementalGroups 1337', async () => {
    const outside = await serve(NS_C, [9001], CLIENT_IP);
    await must('ip', inNs(NS_P, [NODE, WARD, 'capture', '--ipv6', 'off', '--exclude-inbound-ports', '15000', '--exclude-outbound-ports', '53'])); // proxy uid/gid 1337
    const scratch = mkdtempSync(join(tmpdir(), 'ward-bypass-vol-'));
    chmodSync(scratch, 0o1777); // a volume the app can write (an fsGroup volume is group-writable)
    scratchDirs.push(scratch);
    const asApp = (script: string): Promise<Run> => run('ip', inNs(NS_P, ['setpriv', '--reuid=1000', '--regid=1000', '--groups=1337', 'sh', '-c', script]));
    const url = `http://${CLIENT_IP}:9001/`;
    // The supplementary group alone is captured (xt_owner matches the fsgid only; nothing listens
    // on the egress port here, so the call fails inside the pod)...
    expect((await asApp(`curl -s -m 3 ${url}`)).stdout).toBe('');
    // ...but a member may set the setgid bit on its own file of that group.
    const r = await asApp(`set -e; cp "$(command -v curl)" ${scratch}/c && chgrp 1337 ${scratch}/c && chmod 2755 ${scratch}/c && ${scratch}/c -s -m 3 ${url}`);
    expect(r.stdout, r.stderr).toBe('reached 9001');
    expect(hits(outside, 9001)).toBe(1);
    await must('ip', inNs(NS_P, [NODE, WARD, 'capture', '--cleanup', '--ipv6', 'off']));

    for (const sc of [{ fsGroup: 1337 }, { supplementalGroups: [1337] }]) {
      const o = injectPod({ metadata: { name: 'orders' }, spec: { securityContext: { runAsUser: 1000, runAsGroup: 1000, ...sc }, containers: [{ name: 'app', image: 'x' }] } }, { namespaceEnabled: true }, defaultSettings());
      expect(o.kind, JSON.stringify(sc)).toBe('refused');
    }
  });
});
