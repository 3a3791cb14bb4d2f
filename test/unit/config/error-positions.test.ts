import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSidecar } from '../../../src/cli/sidecar.ts';
import { loadSidecarConfig } from '../../../src/config/sidecar.ts';
import { loadControlPlaneConfig } from '../../../src/controlplane/server/config.ts';
import { startControlPlane } from '../../../src/controlplane/server/control-plane.ts';
import { validatePolicyForControlPlane } from '../../../src/controlplane/server/validate.ts';
import { ConfigError, type FileIssue } from '../../../src/errors/ward-error.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { makeSelfSignedCert, type TlsFiles } from '../inbound/harness.ts';
import { memoryLogger } from '../controlplane/fixtures.ts';

/**
 * Errors found after a config file is parsed (a secret that is unset, a file it names that cannot
 * be read, a credential that does not match) are about one field of that file: they carry that
 * field's line:column, as schema errors do, not 1:1. Each case loads a real file and starts the
 * sidecar (or the control plane) the way `ward` does, so the locator is passed all the way.
 */

let dir: string;
let certs: [TlsFiles, TlsFiles];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ward-positions-'));
  writeFileSync(join(dir, 'orders.secret'), 's3cret\n');
  writeFileSync(join(dir, 'empty.secret'), '\n');
  writeFileSync(join(dir, 'web.secret'), 'web-s3cret\n');
  writeFileSync(join(dir, 'session.key'), 'k'.repeat(32));
  writeFileSync(join(dir, 'short.key'), 'kkkkk');
  mkdirSync(join(dir, 'policies'));
  const policy = (introspection: boolean): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: http://127.0.0.1:4400
    audiences: [urn:ward:orders]
${introspection ? '    introspection: true\n' : ''}rules:
  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`;
  writeFileSync(join(dir, 'policy.yaml'), policy(false));
  writeFileSync(join(dir, 'introspecting.policy.yaml'), policy(true));
  certs = [makeSelfSignedCert(), makeSelfSignedCert()];
  copyFileSync(certs[0].certFile, join(dir, 'a.crt'));
  copyFileSync(certs[1].keyFile, join(dir, 'b.key'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  for (const c of certs) c.cleanup();
});

/** The ConfigError a promise (or call) fails with: the test fails if it does not. */
async function refusal(p: Promise<unknown> | (() => unknown)): Promise<ConfigError> {
  try {
    const r = await (typeof p === 'function' ? p() : p);
    throw new Error(`started: ${String(r)}`);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
}

/** Writes `text` as `name` and starts a sidecar from it as `ward sidecar --config` does. */
async function sidecarIssues(text: string, name = 'sidecar.yaml'): Promise<{ file: string; issues: readonly FileIssue[] }> {
  const file = join(dir, name);
  writeFileSync(file, text);
  const refuse = (): Promise<never> => Promise.reject(new Error('no network in this test'));
  const err = await refusal(async () => {
    const s = await startSidecar(loadSidecarConfig(file), { log: silentLogger, configFile: file, fetch: refuse });
    await s.stop();
  });
  return { file, issues: err.issues };
}

// Lines 1-5 of every sidecar config below.
const HEAD = `service: orders
upstream:
  url: http://127.0.0.1:1
inbound:
  listen: { host: 127.0.0.1, port: 0 }
`;
const CREDENTIAL = '[{ issuer: https://idp.test, clientId: orders, clientSecretFile: orders.secret }]';

describe('sidecar config: errors found at start carry their field\'s line:column', () => {
  it('authn.credentials[i]: a client secret that is unset (env) or empty (file), at the field that names it', async () => {
    const text = (secret: string): string => `${HEAD}policy:
  file: policy.yaml
authn:
  credentials:
    - issuer: https://idp.test
      clientId: orders
      ${secret}
`;
    const env = await sidecarIssues(text('clientSecretEnv: WARD_TEST_UNSET_SECRET_8F3A'));
    expect(env.issues).toEqual([
      { file: env.file, line: 12, column: 24, path: 'authn.credentials[0].clientSecretEnv', message: 'client secret for orders is empty or unset' },
    ]);
    const empty = await sidecarIssues(text('clientSecretFile: empty.secret'));
    expect(empty.issues).toEqual([
      { file: empty.file, line: 12, column: 25, path: 'authn.credentials[0].clientSecretFile', message: 'client secret for orders is empty or unset' },
    ]);
  });

  it('authn.credentials[i].clientSecretFile that cannot be read', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  file: policy.yaml
authn:
  credentials:
    - issuer: https://idp.test
      clientId: orders
      clientSecretFile: missing.secret
`);
    expect(r.issues).toEqual([
      { file: r.file, line: 12, column: 25, path: 'authn.credentials[0].clientSecretFile', message: `cannot read ${join(dir, 'missing.secret')}: ENOENT` },
    ]);
  });

  it('session.clientSecretFile that cannot be read, and session.secretFiles[i] too short', async () => {
    const text = (clientSecretFile: string): string => `${HEAD}policy:
  file: policy.yaml
session:
  issuer: https://idp.test
  clientId: web
  clientSecretFile: ${clientSecretFile}
  secretFiles: [session.key, short.key]
`;
    const missing = await sidecarIssues(text('missing.secret'));
    expect(missing.issues).toEqual([
      { file: missing.file, line: 11, column: 21, path: 'session.clientSecretFile', message: `cannot read ${join(dir, 'missing.secret')}: ENOENT` },
    ]);
    const short = await sidecarIssues(text('web.secret'));
    expect(short.issues).toEqual([
      { file: short.file, line: 12, column: 30, path: 'session.secretFiles[1]', message: `${join(dir, 'short.key')} holds 5 bytes; at least 32 are required` },
    ]);
  });

  it('outbound.exchange.issuer with no matching authn.credentials entry', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  file: policy.yaml
outbound:
  exchange:
    issuer: https://other.test
  destinations:
    - { name: payments, url: "http://127.0.0.1:2", resource: urn:ward:payments }
authn:
  credentials: ${CREDENTIAL}
`);
    expect(r.issues).toEqual([{ file: r.file, line: 10, column: 13, path: 'outbound.exchange.issuer', message: 'no authn.credentials entry for issuer https://other.test' }]);
  });

  it('policy.controlPlane.issuer with no matching authn.credentials entry', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  controlPlane:
    address: 127.0.0.1:1
    stateDir: state
    issuer: https://cp-idp.test
`);
    expect(r.issues).toEqual([{ file: r.file, line: 10, column: 13, path: 'policy.controlPlane.issuer', message: 'no authn.credentials entry for issuer https://cp-idp.test' }]);
  });

  it('policy.controlPlane.tls.caFile that cannot be read', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  controlPlane:
    address: 127.0.0.1:1
    stateDir: state
    issuer: https://idp.test
    tls:
      caFile: missing-ca.pem
authn:
  credentials: ${CREDENTIAL}
`);
    expect(r.issues).toEqual([
      { file: r.file, line: 12, column: 15, path: 'policy.controlPlane.tls.caFile', message: `cannot read ${join(dir, 'missing-ca.pem')}: ENOENT` },
    ]);
  });

  it('authn.credentials without the issuer a policy introspects for', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  file: introspecting.policy.yaml
authn:
  credentials: [{ issuer: https://other.test, clientId: orders, clientSecretFile: orders.secret }]
`);
    expect(r.issues).toMatchObject([{ file: r.file, line: 9, column: 16, path: 'authn.credentials' }]);
    expect(r.issues[0]?.message).toContain('introspects opaque tokens of http://127.0.0.1:4400, but no credentials for that issuer are configured');
  });

  it('telemetry.endpoint that is not an OTLP/gRPC endpoint, and telemetry.caFile that cannot be read', async () => {
    const bad = await sidecarIssues(`${HEAD}policy:
  file: policy.yaml
telemetry:
  endpoint: ftp://collector:4317
`);
    expect(bad.issues.length).toBeGreaterThan(0);
    for (const i of bad.issues) {
      expect(i).toEqual({ file: bad.file, line: 9, column: 13, path: 'telemetry.endpoint', message: "expected host:port, http://host:port or https://host:port, got 'ftp://collector:4317'" });
    }
    const ca = await sidecarIssues(`${HEAD}policy:
  file: policy.yaml
telemetry:
  enabled: true
  endpoint: https://collector:4317
  caFile: nope/ca.pem
`);
    expect(ca.issues).toEqual([{ file: ca.file, line: 11, column: 11, path: 'telemetry.caFile', message: `cannot read ${join(dir, 'nope/ca.pem')}: ENOENT` }]);
  });

  it('inbound.tls.certFile that cannot be read; a certificate and key that do not load together, at `tls:`', async () => {
    const text = (certFile: string, keyFile: string): string => `${HEAD}  tls:
    certFile: ${certFile}
    keyFile: ${keyFile}
policy:
  file: policy.yaml
telemetry: { enabled: false }
`;
    const missing = await sidecarIssues(text('nowhere.crt', 'b.key'));
    expect(missing.issues).toEqual([
      { file: missing.file, line: 7, column: 15, path: 'inbound.tls.certFile', message: `cannot read ${join(dir, 'nowhere.crt')}: ENOENT` },
    ]);
    const mismatched = await sidecarIssues(text('a.crt', 'b.key'));
    expect(mismatched.issues).toMatchObject([{ file: mismatched.file, line: 6, column: 3, path: 'inbound.tls' }]);
    expect(mismatched.issues[0]?.message).toMatch(/^certificate and key do not load/);
  });

  it('outbound.destinations[i].tls.caFile that cannot be read', async () => {
    const r = await sidecarIssues(`${HEAD}policy:
  file: policy.yaml
telemetry: { enabled: false }
authn:
  credentials: ${CREDENTIAL}
outbound:
  listen: { port: 0 }
  destinations:
    - name: payments
      url: https://127.0.0.1:2
      resource: urn:ward:payments
      tls: { caFile: missing-ca.pem }
`);
    expect(r.issues).toEqual([
      { file: r.file, line: 17, column: 22, path: 'outbound.destinations[0].tls.caFile', message: `cannot read ${join(dir, 'missing-ca.pem')}: ENOENT` },
    ]);
  });
});

// Lines 1-9 of every control-plane config below.
const CP_HEAD = `policyDir: policies
authn:
  issuers:
    - issuer: https://idp.example.com
      audiences: [urn:ward:control-plane]
bindings:
  - subject: orders-sidecar
    services: [orders]
listen: { host: 127.0.0.1, port: 0 }
`;

/** Writes `text` as the control plane's config and starts it as `ward control-plane --config` does. */
async function controlPlaneIssues(text: string): Promise<{ file: string; issues: readonly FileIssue[] }> {
  const file = join(dir, 'control-plane.yaml');
  writeFileSync(file, text);
  const cfg = loadControlPlaneConfig(file);
  const err = await refusal(async () => {
    const cp = await startControlPlane(cfg, {
      log: silentLogger,
      parse: validatePolicyForControlPlane,
      authenticator: { authenticate: () => Promise.reject(new Error('no callers in this test')) },
      telemetry: cfg.telemetry,
      watch: false,
    });
    await cp.close();
  });
  return { file, issues: err.issues };
}

describe('control-plane config: errors found at start carry their field\'s line:column', () => {
  it('tls.certFile that cannot be read (in the config file, naming the certificate); a pair that does not load, at `tls:`', async () => {
    const missing = await controlPlaneIssues(`${CP_HEAD}tls:
  certFile: nowhere.crt
  keyFile: b.key
`);
    expect(missing.issues).toEqual([{ file: missing.file, line: 11, column: 13, path: 'tls.certFile', message: `cannot read ${join(dir, 'nowhere.crt')}: ENOENT` }]);
    const mismatched = await controlPlaneIssues(`${CP_HEAD}tls:
  certFile: a.crt
  keyFile: b.key
`);
    expect(mismatched.issues).toMatchObject([{ file: mismatched.file, line: 10, column: 1, path: 'tls' }]);
    expect(mismatched.issues[0]?.message).toMatch(/^certificate and key do not load/);
  });

  it('policyDir that cannot be read (in the config file, naming the directory)', async () => {
    // moved from line 1 to line 9
    const r = await controlPlaneIssues(`${CP_HEAD.replace('policyDir: policies\n', '')}policyDir: no-such-policies\n`);
    expect(r.issues).toEqual([{ file: r.file, line: 9, column: 12, path: 'policyDir', message: `cannot read policy directory ${join(dir, 'no-such-policies')}: ENOENT` }]);
  });

  it('telemetry.forward.endpoint that is not an OTLP/gRPC endpoint, and telemetry.forward.caFile that cannot be read', async () => {
    const bad = await controlPlaneIssues(`${CP_HEAD}telemetry:
  forward:
    endpoint: ftp://collector:4317
`);
    expect(bad.issues).toEqual([
      { file: bad.file, line: 12, column: 15, path: 'telemetry.forward.endpoint', message: "expected host:port, http://host:port or https://host:port, got 'ftp://collector:4317'" },
    ]);
    const ca = await controlPlaneIssues(`${CP_HEAD}telemetry:
  forward:
    endpoint: https://collector:4317
    caFile: missing-ca.pem
`);
    expect(ca.issues).toEqual([{ file: ca.file, line: 13, column: 13, path: 'telemetry.forward.caFile', message: `cannot read ${join(dir, 'missing-ca.pem')}: ENOENT` }]);
  });

  it('a start refused for its forward endpoint leaves nothing running (regression: the policy store kept its watch and poll)', async () => {
    const file = join(dir, 'control-plane.yaml');
    writeFileSync(file, `${CP_HEAD}watch: { pollIntervalMs: 100, debounceMs: 0 }\ntelemetry:\n  forward:\n    endpoint: ftp://collector:4317\n`);
    const cfg = loadControlPlaneConfig(file);
    const { log, records } = memoryLogger();
    await expect(
      startControlPlane(cfg, {
        log,
        parse: validatePolicyForControlPlane,
        authenticator: { authenticate: () => Promise.reject(new Error('no callers in this test')) },
        telemetry: cfg.telemetry,
      }),
    ).rejects.toThrow(/telemetry\.forward\.endpoint/);
    // A policy written afterwards is seen by nobody: no store is left watching the directory.
    writeFileSync(join(dir, 'policies', 'late.yaml'), 'apiVersion: ward.dev/v1\nkind: Policy\nservice: late\nissuers: []\nrules: []\n');
    await new Promise((r) => setTimeout(r, 400));
    rmSync(join(dir, 'policies', 'late.yaml'));
    expect(records.filter((r) => r['msg'] === 'policy version served' || r['msg'] === 'policy file refused; the previous valid version stays in force')).toEqual([]);
  });
});
