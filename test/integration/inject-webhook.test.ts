import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultSettings } from '../../src/inject/settings.ts';
import { startInjectorServer } from '../../src/inject/webhook-server.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { applyPatch, chartObjects, podTemplateOf, validatePod } from '../unit/inject/helpers.ts';
import type { PodTemplate } from '../../src/inject/pod.ts';

/**
 * `ward injector` as the API server sees it: a real process serving HTTPS with a certificate
 * from files (openssl at test time), AdmissionReview v1 in, JSONPatch out; and the in-process
 * server picking up a rotated certificate without a restart.
 */

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ward-injector-'));

function makeCert(name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', `/CN=${name}`, '-addext', 'subjectAltName=DNS:ward-injector.ward-system.svc,IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}

function post(port: number, ca: Buffer, path: string, body: string | Buffer, method = 'POST'): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, ca, servername: 'ward-injector.ward-system.svc', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function peerCert(port: number, ca: Buffer): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'ward-injector.ward-system.svc' }, () => {
      resolve(s.getPeerCertificate());
      s.destroy();
    });
    s.on('error', reject);
  });
}

function reviewOf(pod: Record<string, unknown>, uid = 'b6c1a5e4-0000-4000-8000-000000000001'): string {
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object: pod },
  });
}

describe('ward injector (real process, HTTPS)', () => {
  let proc: ChildProcess;
  let port = 0;
  let ca: Buffer;
  const logs: string[] = [];

  beforeAll(async () => {
    const pair = makeCert('injector');
    ca = readFileSync(pair.cert);
    proc = spawn(process.execPath, [WARD, 'injector', '--cert', pair.cert, '--key', pair.key, '--host', '127.0.0.1', '--port', '0', '--image', 'registry.example/ward:1.2.3'], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stderr?.on('data', (d: Buffer) => logs.push(d.toString()));
    port = await new Promise<number>((resolve, reject) => {
      proc.stdout?.on('data', (d: Buffer) => {
        const m = /listening on https:\/\/[^:]+:(\d+)\//.exec(d.toString());
        if (m !== null) resolve(Number(m[1]));
      });
      proc.on('exit', (code) => reject(new Error(`injector exited ${code}: ${logs.join('')}`)));
    });
  });

  afterAll(async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
  });

  it('patches every injectable pod from common charts into a valid, injected pod', async () => {
    let injectedCount = 0;
    for (const obj of chartObjects()) {
      if (obj.kind === 'Namespace' || obj.kind === 'Service') continue;
      const t = podTemplateOf(obj);
      const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { ...t.metadata, generateName: `${obj.metadata.name}-` }, spec: t.spec };
      const r = await post(port, ca, '/inject', reviewOf(pod));
      expect(r.status).toBe(200);
      const response = r.json['response'] as Record<string, unknown>;
      expect(response['uid']).toBe('b6c1a5e4-0000-4000-8000-000000000001');
      expect(response['allowed']).toBe(true);
      if (response['patch'] === undefined) continue;
      injectedCount++;
      const ops = JSON.parse(Buffer.from(response['patch'] as string, 'base64').toString()) as { op: string; path: string; value?: unknown }[];
      const patched = applyPatch(pod, ops) as PodTemplate;
      validatePod(patched);
      expect(patched.spec.initContainers?.find((c) => c.name === 'ward-sidecar')?.image).toBe('registry.example/ward:1.2.3');
      // a second pass over the patched pod (reinvocation) changes nothing
      const again = await post(port, ca, '/inject', reviewOf(patched as unknown as Record<string, unknown>));
      expect(again.json['response']).toEqual({ uid: 'b6c1a5e4-0000-4000-8000-000000000001', allowed: true });
    }
    expect(injectedCount).toBe(5);
  });

  it('denies a pod with an impossible annotation, and answers probes and bad requests', async () => {
    const bad = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', annotations: { 'ward.dev/inbound-ports': 'all' } }, spec: { containers: [{ name: 'c', image: 'i' }] } };
    const r = await post(port, ca, '/inject', reviewOf(bad));
    expect(r.json['response']).toMatchObject({ allowed: false, status: { code: 400, message: expect.stringContaining('ward.dev/inbound-ports') } });
    expect((await post(port, ca, '/healthz', '', 'GET')).status).toBe(200);
    expect((await post(port, ca, '/inject', 'not json')).status).toBe(400);
    expect((await post(port, ca, '/inject', '', 'GET')).status).toBe(405);
    expect((await post(port, ca, '/nope', '{}')).status).toBe(404);
    expect((await post(port, ca, '/inject', Buffer.alloc(7 * 1024 * 1024, 0x20)).catch(() => ({ status: 413 }))).status).toBe(413);
  });
});

describe('injector certificate rotation', () => {
  it('serves a rotated certificate without a restart', async () => {
    const first = makeCert('first');
    const second = makeCert('second');
    const live = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
    copyFileSync(first.cert, live.cert);
    copyFileSync(first.key, live.key);
    const server = await startInjectorServer({ host: '127.0.0.1', port: 0, certFile: live.cert, keyFile: live.key, settings: defaultSettings(), log: silentLogger, certPollMs: 50 });
    try {
      expect((await peerCert(server.port, readFileSync(first.cert))).subject.CN).toBe('first');
      copyFileSync(second.key, live.key);
      copyFileSync(second.cert, live.cert);
      const deadline = Date.now() + 10_000;
      let cn = '';
      while (Date.now() < deadline) {
        cn = await peerCert(server.port, readFileSync(second.cert)).then((c) => String(c.subject.CN), () => '');
        if (cn === 'second') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(cn).toBe('second');
    } finally {
      await server.close();
    }
  });
});

describe('deploy/scripts/webhook-cert.sh', () => {
  const SCRIPT = fileURLToPath(new URL('../../deploy/scripts/webhook-cert.sh', import.meta.url));

  it('makes a certificate the injector serves and a client verifies as ward-injector.ward-system.svc', async () => {
    const out = join(dir, 'script-out');
    execFileSync('bash', [SCRIPT, '--out', out, '--dry-run'], { stdio: 'pipe' });
    const server = await startInjectorServer({ host: '127.0.0.1', port: 0, certFile: join(out, 'tls.crt'), keyFile: join(out, 'tls.key'), settings: defaultSettings(), log: silentLogger });
    try {
      const cert = await peerCert(server.port, readFileSync(join(out, 'ca.crt')));
      expect(cert.subjectaltname).toContain('DNS:ward-injector.ward-system.svc');
    } finally {
      await server.close();
    }
  });

  it('stores the Secret and puts the new and the previous CA into every webhook\'s caBundle', () => {
    // A stand-in kubectl that records what the script asks of the cluster.
    const bin = join(dir, 'fake-bin');
    mkdirSync(bin, { recursive: true });
    const oldCa = readFileSync(makeCert('old-ca').cert, 'utf8');
    writeFileSync(join(dir, 'old-bundle.b64'), Buffer.from(oldCa).toString('base64'));
    writeFileSync(join(bin, 'kubectl'), `#!/bin/sh
echo "$*" >> "${dir}/kubectl.log"
case "$*" in
  *"create secret tls"*) echo "kind: Secret" ;;
  "apply -f -") cat > "${dir}/applied.yaml" ;;
  *"webhooks[0].clientConfig.caBundle"*) cat "${dir}/old-bundle.b64" ;;
  *"range .webhooks"*) printf xx ;;
  *"patch mutatingwebhookconfiguration"*) printf '%s' "$6" > "${dir}/patch.json" ;;
esac
`);
    chmodSync(join(bin, 'kubectl'), 0o755);
    const out = join(dir, 'script-live');
    execFileSync('bash', [SCRIPT, '--out', out], { stdio: 'pipe', env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` } });
    const log = readFileSync(join(dir, 'kubectl.log'), 'utf8');
    expect(log).toContain('-n ward-system create secret tls ward-injector-tls');
    expect(readFileSync(join(dir, 'applied.yaml'), 'utf8')).toContain('kind: Secret');
    const patch = JSON.parse(readFileSync(join(dir, 'patch.json'), 'utf8')) as { op: string; path: string; value: string }[];
    expect(patch.map((p) => p.path)).toEqual(['/webhooks/0/clientConfig/caBundle', '/webhooks/1/clientConfig/caBundle']);
    const bundle = Buffer.from(patch[0]!.value, 'base64').toString();
    expect(bundle.startsWith(readFileSync(join(out, 'ca.crt'), 'utf8'))).toBe(true);
    expect(bundle).toContain(oldCa.trim());
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
