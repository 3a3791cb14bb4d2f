import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/authn/authenticator.ts';
import { startControlPlane, type RunningControlPlane } from '../../src/controlplane/server/control-plane.ts';
import { parseControlPlaneConfig } from '../../src/controlplane/server/config.ts';
import { validatePolicyForControlPlane } from '../../src/controlplane/server/validate.ts';
import { healthClient } from '../../src/controlplane/proto.ts';
import { ConfigError } from '../../src/errors/ward-error.ts';
import { createLogger, type Logger } from '../../src/lib/log.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { controlPlaneAuthenticator, controlPlaneYaml } from '../unit/controlplane/idp-setup.ts';
import { makeCaSignedCert } from '../unit/inbound/harness.ts';

/**
 * The control plane as the Kubernetes manifests run it: TLS on its gRPC port, a certificate
 * that is renewed under it (a Secret update swaps the mounted files), and a cleartext port with
 * grpc.health.v1 alone for the kubelet's probes, which speak no TLS. Real grpc-js clients.
 */

const HOST = 'ward-control-plane.ward-system.svc';

interface Pair {
  readonly ca: Buffer;
  readonly cert: string;
  readonly key: string;
}

/** A CA and a server certificate it signed for HOST, as deploy/scripts/control-plane-cert.sh makes them. */
function issue(dir: string, name: string): Pair {
  const p = makeCaSignedCert(dir, name, `DNS:${HOST}`);
  return { ca: readFileSync(p.ca), cert: p.cert, key: p.key };
}

type HealthClient = grpc.Client & {
  Check(req: { service: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
};

/** grpc.health.v1 Check over a fresh channel: the status, or the gRPC error code. */
async function check(port: number, creds: grpc.ChannelCredentials): Promise<string | grpc.status> {
  const Health = healthClient();
  // Connect to the loopback port while verifying the certificate for the Service's name.
  const client = new Health(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': HOST, 'grpc.default_authority': HOST }) as unknown as HealthClient;
  try {
    return await new Promise<string | grpc.status>((resolve) => {
      client.Check({ service: '' }, { deadline: Date.now() + 3000 }, (err, res) => resolve(err !== null ? err.code : (res?.status ?? 'none')));
    });
  } finally {
    client.close();
  }
}

const tlsWith = (ca: Buffer): grpc.ChannelCredentials => grpc.credentials.createSsl(ca);

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

/** `ward ARGS` as a process: exit code and output. */
function ward(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [WARD, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

/** Replaces a file the way the kubelet updates a Secret volume: whole, in one rename. */
function swapIn(from: string, to: string): void {
  copyFileSync(from, `${to}.tmp`);
  renameSync(`${to}.tmp`, to);
}

describe('control plane over TLS, with a renewed certificate and a cleartext health port', () => {
  let idp: TestIdp;
  let dir: string;
  let cp: RunningControlPlane;
  let authn: Authenticator;
  let first: Pair;
  let second: Pair;
  const lines: string[] = [];
  let log: Logger;

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'ward-cp-tls2-'));
    first = issue(dir, 'first');
    second = issue(dir, 'second');
    const live = join(dir, 'live');
    mkdirSync(live);
    copyFileSync(first.cert, join(live, 'tls.crt'));
    copyFileSync(first.key, join(live, 'tls.key'));
    const policies = join(dir, 'policies');
    mkdirSync(policies);
    const yaml = `${controlPlaneYaml(idp.issuer, policies)}tls: { certFile: live/tls.crt, keyFile: live/tls.key }\nhealth: { host: 127.0.0.1, port: 0 }\n`;
    const cfg = parseControlPlaneConfig(yaml, join(dir, 'cp.yaml'));
    authn = controlPlaneAuthenticator(cfg);
    log = createLogger({ level: 'info', sink: { write: (l: string) => void lines.push(l) } });
    cp = await startControlPlane(cfg, { log, parse: validatePolicyForControlPlane, authenticator: authn, certPollMs: 50 });
  });

  afterAll(async () => {
    await cp?.close();
    authn?.close();
    await idp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers the health check in cleartext on its own port, and only over TLS on the gRPC port', async () => {
    expect(cp.healthPort).toBeGreaterThan(0);
    expect(cp.healthPort).not.toBe(cp.port);
    expect(await check(cp.healthPort!, grpc.credentials.createInsecure())).toBe('SERVING');
    expect(await check(cp.port, tlsWith(first.ca))).toBe('SERVING');
    expect(await check(cp.port, grpc.credentials.createInsecure())).toBe(grpc.status.UNAVAILABLE);
  });

  it('serves only health on the cleartext port: the policy service is not there', async () => {
    const client = new grpc.Client(`127.0.0.1:${cp.healthPort}`, grpc.credentials.createInsecure());
    try {
      const code = await new Promise<grpc.status>((resolve) => {
        client.makeUnaryRequest(
          '/ward.v1.PolicyDiscovery/GetStatus',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          { deadline: Date.now() + 3000 },
          (err) => resolve(err?.code ?? grpc.status.OK),
        );
      });
      expect(code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });

  it('takes a renewed certificate without a restart: new connections get it', async () => {
    swapIn(second.key, join(dir, 'live', 'tls.key'));
    swapIn(second.cert, join(dir, 'live', 'tls.crt'));
    let got: string | grpc.status = grpc.status.UNKNOWN;
    for (let i = 0; i < 100 && got !== 'SERVING'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      got = await check(cp.port, tlsWith(second.ca));
    }
    expect(got).toBe('SERVING');
    // the old CA no longer verifies what is served
    expect(await check(cp.port, tlsWith(first.ca))).toBe(grpc.status.UNAVAILABLE);
    expect(lines.some((l) => l.includes('control-plane certificate reloaded'))).toBe(true);
  });

  it('keeps serving the last good certificate when a renewal does not load', async () => {
    // a key that does not belong to the certificate
    swapIn(first.key, join(dir, 'live', 'tls.key'));
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('certificate reload failed')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(lines.some((l) => l.includes('control-plane certificate reload failed; keeping the previous one'))).toBe(true);
    expect(await check(cp.port, tlsWith(second.ca))).toBe('SERVING');
    expect(await check(cp.healthPort!, grpc.credentials.createInsecure())).toBe('SERVING');
  });

  it('answers `ward status` and `ward decisions` through a port-forward: --server-name verifies the Service\'s name', async () => {
    const ca = join(dir, 'second', 'ca.crt');
    const address = `127.0.0.1:${cp.port}`;
    const named = await ward(['status', '--address', address, '--ca-file', ca, '--server-name', HOST]);
    expect(named.code, named.stderr).toBe(0);
    expect(named.stdout).toContain('cp-it');
    const summary = await ward(['decisions', '--summary', '--address', address, '--ca-file', ca, '--server-name', HOST]);
    expect(summary.code, summary.stderr).toBe(0);
    // without it, the certificate does not name 127.0.0.1
    const unnamed = await ward(['status', '--address', address, '--ca-file', ca, '--timeout-ms', '2000']);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toContain('UNAVAILABLE');
  });

  it('refuses to start with a clear error: a missing file, or a key that is not the certificate\'s', async () => {
    const policies = join(dir, 'policies');
    const start = (tls: string): Promise<RunningControlPlane> =>
      startControlPlane(parseControlPlaneConfig(`${controlPlaneYaml(idp.issuer, policies)}tls: ${tls}\n`, join(dir, 'bad.yaml')), {
        log,
        parse: validatePolicyForControlPlane,
        authenticator: authn,
      });
    const missing = start(`{ certFile: nowhere.crt, keyFile: ${first.key} }`);
    await expect(missing).rejects.toBeInstanceOf(ConfigError);
    await expect(missing).rejects.toThrow(/bad\.yaml:\d+:18: tls\.certFile: cannot read .*nowhere\.crt: ENOENT/);
    const mismatched = start(`{ certFile: ${first.cert}, keyFile: ${second.key} }`);
    await expect(mismatched).rejects.toThrow(/certificate and key do not load/);
  });
});

describe('deploy/scripts/control-plane-cert.sh', () => {
  const SCRIPT = fileURLToPath(new URL('../../deploy/scripts/control-plane-cert.sh', import.meta.url));
  let idp: TestIdp;
  let dir: string;

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'ward-cp-cert-'));
  });
  afterAll(async () => {
    await idp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes a certificate the control plane serves and a sidecar verifies as the Service\'s name', async () => {
    const out = join(dir, 'dry');
    execFileSync('bash', [SCRIPT, '--out', out, '--dry-run'], { stdio: 'pipe' });
    const policies = join(dir, 'policies');
    mkdirSync(policies);
    const cfg = parseControlPlaneConfig(`${controlPlaneYaml(idp.issuer, policies)}tls: { certFile: ${join(out, 'tls.crt')}, keyFile: ${join(out, 'tls.key')} }\n`, join(dir, 'cp.yaml'));
    const authn = controlPlaneAuthenticator(cfg);
    const cp = await startControlPlane(cfg, { log: createLogger({ level: 'error', sink: { write: () => {} } }), parse: validatePolicyForControlPlane, authenticator: authn });
    try {
      expect(await check(cp.port, tlsWith(readFileSync(join(out, 'ca.crt'))))).toBe('SERVING');
    } finally {
      await cp.close();
      authn.close();
    }
    const text = execFileSync('openssl', ['x509', '-in', join(out, 'tls.crt'), '-noout', '-ext', 'subjectAltName,extendedKeyUsage', '-enddate'], { encoding: 'utf8' });
    expect(text).toContain(`DNS:${HOST}`);
    expect(text).toContain('TLS Web Server Authentication');
    // 90 days by default (the renewal is meant to be regular, not yearly)
    const days = (Date.parse(/notAfter=(.*)/.exec(text)![1]!) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(89);
    expect(days).toBeLessThan(91);
  });

  it('keeps its CA in the cluster, renews under the same CA, and publishes the CA where the sidecars read it', () => {
    // A stand-in kubectl with a little state: what the script stores, it can read back.
    const state = join(dir, 'state');
    const bin = join(dir, 'fake-bin');
    mkdirSync(state);
    mkdirSync(bin);
    writeFileSync(join(bin, 'kubectl'), `#!/bin/bash
S="${state}"
echo "$*" >> "$S/log"
all="$*"
ns=""
if [ "$1" = "-n" ]; then ns="$2"; shift 2; fi
case "$1 $2" in
  "get secret")
    f="$S/secret-$ns-$3"
    [ -f "$f.tls.crt" ] || exit 1
    case "$all" in
      *'tls\\.crt'*) base64 -w0 "$f.tls.crt" ;;
      *'tls\\.key'*) base64 -w0 "$f.tls.key" ;;
    esac
    exit 0 ;;
  "get namespaces") printf 'shop,web,'; exit 0 ;;
  "create secret")
    f="$S/secret-$ns-$4"; shift 4
    while [ $# -gt 0 ]; do
      case "$1" in
        --cert) cp "$2" "$f.tls.crt"; shift 2 ;;
        --key) cp "$2" "$f.tls.key"; shift 2 ;;
        --from-file=*) kv="\${1#--from-file=}"; cp "\${kv#*=}" "$f.\${kv%%=*}"; shift ;;
        *) shift ;;
      esac
    done
    echo "kind: Secret"; exit 0 ;;
  "create configmap")
    f="$S/cm-$ns-$3"; shift 3
    for a in "$@"; do case "$a" in --from-file=*) kv="\${a#--from-file=}"; cp "\${kv#*=}" "$f.\${kv%%=*}" ;; esac; done
    echo "kind: ConfigMap"; exit 0 ;;
  "apply -f") cat > /dev/null; exit 0 ;;
esac
echo "unexpected kubectl $all" >&2
exit 3
`);
    chmodSync(join(bin, 'kubectl'), 0o755);
    const env = { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` };
    const run = (...args: string[]): void => void execFileSync('bash', [SCRIPT, ...args], { stdio: 'pipe', env });
    const read = (f: string): string => readFileSync(join(state, f), 'utf8');
    const chains = (ca: string, cert: string): boolean => {
      try {
        execFileSync('openssl', ['verify', '-CAfile', join(state, ca), join(state, cert)], { stdio: 'pipe' });
        return true;
      } catch {
        return false;
      }
    };
    const CA = 'secret-ward-system-ward-control-plane-ca.tls.crt';
    const LEAF = 'secret-ward-system-ward-control-plane-tls.tls.crt';

    run();
    const ca1 = read(CA);
    expect(chains(CA, LEAF)).toBe(true);
    expect(read('secret-ward-system-ward-control-plane-tls.ca.crt')).toBe(ca1);
    expect(read('secret-ward-system-ward-control-plane-tls.tls.key')).toContain('PRIVATE KEY');
    // the CA goes to every enrolled namespace (kubectl's label query), before the certificate
    for (const ns of ['shop', 'web']) expect(read(`cm-${ns}-ward-control-plane-ca.ca.crt`)).toBe(ca1);
    const log1 = read('log').split('\n');
    expect(log1.findIndex((l) => l.startsWith('-n web create configmap'))).toBeLessThan(log1.findIndex((l) => l.includes('create secret generic ward-control-plane-tls')));

    // renewal: a new server certificate, the same CA (running sidecars keep trusting it)
    const leaf1 = read(LEAF);
    writeFileSync(join(state, 'log'), '');
    run('--namespaces', 'shop');
    expect(read(CA)).toBe(ca1);
    expect(read(LEAF)).not.toBe(leaf1);
    expect(chains(CA, LEAF)).toBe(true);
    expect(read('log')).not.toContain('create secret tls ward-control-plane-ca');
    expect(read('log')).not.toContain('get namespaces');

    // --new-ca: a new CA, and the ConfigMaps carry it next to the previous one
    run('--new-ca', '--namespaces', 'shop');
    const ca2 = read(CA);
    expect(ca2).not.toBe(ca1);
    expect(chains(CA, LEAF)).toBe(true);
    expect(read('cm-shop-ward-control-plane-ca.ca.crt')).toBe(`${ca2}${ca1}`);
  });

  it('refuses a malformed option', () => {
    expect(() => execFileSync('bash', [SCRIPT, '--days', 'soon', '--dry-run'], { stdio: 'pipe' })).toThrow(/take a number of days/);
    expect(() => execFileSync('bash', [SCRIPT, '--bogus'], { stdio: 'pipe' })).toThrow(/unknown option --bogus/);
  });
});
