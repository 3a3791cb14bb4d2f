import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { captureRules, ipv6FilterRules } from '../../src/inject/capture.ts';

/** `ward inject` and `ward capture` as a user runs them: stdin/stdout, files, exit codes. */

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
const CHARTS = fileURLToPath(new URL('../fixtures/k8s/charts.yaml', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ward-inject-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function ward(args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [WARD, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
    child.stdin?.end(stdin);
  });
}

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: api
  annotations: { ward.dev/inject: enabled }
spec:
  containers: [{ name: api, image: example/api, ports: [{ containerPort: 3000 }] }]
`;

describe('ward inject', () => {
  it('reads standard input, writes standard output, reports on stderr; twice changes nothing', async () => {
    const once = await ward(['inject', '--image', 'registry.example/ward:9'], POD);
    expect(once.code).toBe(0);
    expect(once.stdout).toContain('name: ward-sidecar');
    expect(once.stdout).toContain('image: registry.example/ward:9');
    expect(once.stderr).toBe('ward inject: Pod/default/api: injected: service api\n');
    const twice = await ward(['inject', '--image', 'registry.example/ward:9', '--quiet'], once.stdout);
    expect(twice).toEqual({ code: 0, stdout: once.stdout, stderr: '' });
  });

  it('takes files and --all, and writes -o FILE', async () => {
    const out = join(dir, 'out.yaml');
    const r = await ward(['inject', '-f', CHARTS, '-o', out, '--all', '--native-sidecar', 'false']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    const text = readFileSync(out, 'utf8');
    expect(text.match(/- name: ward-sidecar/g)).toHaveLength(5);
    expect(text).toContain('kubectl.kubernetes.io/default-container');
  });

  it('exits 1 and writes nothing when an opted-in workload cannot be injected', async () => {
    const r = await ward(['inject'], POD.replace('ward.dev/inject: enabled', 'ward.dev/inject: enabled, ward.dev/app-port: "99999"'));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Pod/default/api: refused: ward.dev/app-port');
  });

  it('takes the sidecar\'s NODE_OPTIONS from --proxy-node-options', async () => {
    const r = await ward(['inject', '--proxy-node-options=--max-semi-space-size=2  --max-old-space-size=512'], POD);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('value: --max-semi-space-size=2 --max-old-space-size=512');
    expect((await ward(['inject'], POD)).stdout).toContain('value: --max-semi-space-size=1 --max-old-space-size=2047');
    expect((await ward(['inject', '--proxy-node-options='], POD)).stdout).not.toContain('NODE_OPTIONS');
  });

  it('refuses bad settings and bad YAML', async () => {
    expect((await ward(['inject', '--inbound-port', '15000'], POD)).code).toBe(2);
    expect((await ward(['inject', '--native-sidecar', 'yes'], POD)).code).toBe(2);
    expect((await ward(['inject', '--proxy-uid', '0'], POD)).code).toBe(2);
    expect((await ward(['inject', '--proxy-gid', '0'], POD)).code).toBe(2);
    expect((await ward(['inject', '--proxy-node-options=--max-old-space-size=512 $(id)'], POD)).code).toBe(2);
    const broken = await ward(['inject', '-f', '-'], 'kind: Pod\nspec: [\n');
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^\(stdin\):\d+:\d+: /);
  });
});

describe('ward capture', () => {
  it('--dry-run prints the iptables-restore input of both families', async () => {
    const r = await ward(['capture', '--dry-run', '--exclude-inbound-ports', '15000', '--exclude-outbound-ports', '53,5432', '--exclude-outbound-cidrs', '10.96.0.0/12,fd00::/8']);
    expect(r.code).toBe(0);
    const o = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337, proxyGid: 1337, inboundPorts: '*' as const, excludeInboundPorts: [15000], excludeOutboundPorts: [53, 5432], excludeOutboundCidrs: ['10.96.0.0/12', 'fd00::/8'] };
    expect(r.stdout).toBe(
      `# ward capture: iptables-restore --noflush input (IPv4)\n${captureRules(o, 'ipv4')}# ward capture: ip6tables-restore --noflush input (IPv6)\n${captureRules(o, 'ipv6')}` +
        `# ward capture: ip6tables-restore --noflush input (IPv6, when the nat table is unusable)\n${ipv6FilterRules(o)}`,
    );
    const noOut = await ward(['capture', '--dry-run', '--no-outbound', '--ipv6', 'off', '--inbound-ports', '8080']);
    expect(noOut.stdout).toContain('-A WARD_INBOUND -p tcp --dport 8080 -j WARD_IN_REDIRECT');
    expect(noOut.stdout).not.toContain('WARD_OUTPUT');
    expect(noOut.stdout).not.toContain('IPv6');
  });

  it.each([
    [['--proxy-uid', '0']],
    // regression: --proxy-gid 0 was accepted, and exempted every gid-0 process from capture
    [['--proxy-gid', '0']],
    [['--inbound-port', 'x']],
    [['--exclude-outbound-cidrs', 'nope']],
    [['--no-outbound', '--outbound-port', '15001']],
    [['--ipv6', 'maybe']],
    [['--inbound-ports', '']],
  ])('refuses %j with exit 2', async (args) => {
    const r = await ward(['capture', '--dry-run', ...args]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
  });
});
