import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isToPrimary, isToWorker } from '../../../src/cluster/ipc.ts';
import { resolveSessionSecrets, sessionConfigSchema } from '../../../src/config/session.ts';
import { parseSidecarConfig, resolveCredentials } from '../../../src/config/sidecar.ts';
import { ConfigError } from '../../../src/errors/ward-error.ts';

/**
 * Values the config schema took but the sidecar could not use as written, found in review
 * (regressions): each is now refused at load, at its field.
 */

const BASE = `service: orders
inbound:
  listen: { port: 15006 }
upstream:
  url: http://127.0.0.1:8080
policy:
  file: policy.yaml
`;

function errorText(text: string): string {
  try {
    parseSidecarConfig(text, '/cfg/sidecar.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return '(accepted)';
}

describe('sidecar config: values that could not be used are refused', () => {
  it('policy.controlPlane.instanceId the control plane would refuse is a start-up error (regression: the sidecar reconnected for ever)', () => {
    const cp = (id: string): string => BASE.replace('file: policy.yaml', `controlPlane: { address: "ward-cp:15010", stateDir: state, issuer: "https://idp", instanceId: ${JSON.stringify(id)} }`);
    expect(errorText(cp('pod-1\nforged row'))).toContain('policy.controlPlane.instanceId: must be printable ASCII');
    expect(errorText(cp('pod-\u00e9'))).toContain('policy.controlPlane.instanceId: must be printable ASCII');
    expect(errorText(cp('x'.repeat(129)))).toContain('policy.controlPlane.instanceId');
    expect(errorText(cp('orders-7d9f:1234'))).toBe('(accepted)');
  });

  it('policy.controlPlane.address with a port of 0 or above 65535 (the sidecar would never connect)', () => {
    for (const address of ['ward-cp.ward-system.svc:99999', 'ward-cp:0', '[::1]:70000']) {
      const text = BASE.replace('file: policy.yaml', `controlPlane: { address: "${address}", stateDir: state, issuer: "https://idp" }`);
      expect(errorText(text), address).toContain('policy.controlPlane.address: the port must be 1-65535');
    }
    expect(errorText(BASE.replace('file: policy.yaml', 'controlPlane: { address: "ward-cp:65535", stateDir: state, issuer: "https://idp" }'))).toBe('(accepted)');
  });

  it('upstream.url with credentials, a path, a query or a fragment (none was used, and the password was logged)', () => {
    for (const url of ['http://admin:s3cret@127.0.0.1:8080', 'http://127.0.0.1:8080/api/v1', 'http://127.0.0.1:8080?x=1', 'http://127.0.0.1:8080#f']) {
      expect(errorText(BASE.replace('http://127.0.0.1:8080', url)), url).toContain('upstream.url: must be http://host:port only');
    }
    expect(errorText(BASE.replace('http://127.0.0.1:8080', 'http://127.0.0.1:8080/'))).toBe('(accepted)');
  });

  it('a duration a Node timer cannot hold (above 2^31-1 ms) instead of a 1 ms timer', () => {
    expect(errorText(BASE + 'drainTimeoutMs: 2147483648\n')).toContain('drainTimeoutMs: at most 86400000');
    expect(errorText(BASE.replace('url: http://127.0.0.1:8080', 'url: http://127.0.0.1:8080\n  requestTimeoutMs: 2147483648'))).toContain('upstream.requestTimeoutMs: at most 2147483647');
    expect(errorText(BASE.replace('url: http://127.0.0.1:8080', 'url: http://127.0.0.1:8080\n  requestTimeoutMs: 2147483647'))).toBe('(accepted)');
    // Durations that are only compared, never a timer, stay unbounded: a 30-day JWKS grace works.
    expect(errorText(`${BASE}authn: { jwks: { graceMs: 2592000000, cooldownMs: 2592000000 } }\n`)).toBe('(accepted)');
  });
});

describe('error positions and fields', () => {
  it('an unknown key that YAML reads as a number is reported at its own line, not 1:1', () => {
    expect(errorText(`${BASE}8080: oops\n`)).toContain('/cfg/sidecar.yaml:8:1: 8080: Unrecognized key');
  });

  it('client secrets from the environment are trimmed as those from files are (regression: a Secret made --from-file kept its newline)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-env-secret-'));
    writeFileSync(join(dir, 'seal.key'), 'k'.repeat(64));
    const s = sessionConfigSchema.parse({ issuer: 'https://idp.example.com', clientId: 'web', clientSecretEnv: 'WEB_SECRET', secretFiles: ['seal.key'] });
    expect(resolveSessionSecrets(s, dir, '/cfg/sidecar.yaml', { WEB_SECRET: 'web-secret\n' }).clientSecret).toBe('web-secret');
    rmSync(dir, { recursive: true, force: true });
    const cfg = parseSidecarConfig(`${BASE}authn:\n  credentials:\n    - { issuer: "https://idp.example.com", clientId: orders, clientSecretEnv: ORDERS_SECRET }\n`, '/cfg/sidecar.yaml');
    expect(resolveCredentials(cfg, '/cfg/sidecar.yaml', { ORDERS_SECRET: 'orders-secret\r\n' })[0]?.clientSecret).toBe('orders-secret');
    expect(() => resolveCredentials(cfg, '/cfg/sidecar.yaml', { ORDERS_SECRET: ' \n' })).toThrow(/client secret for orders is empty or unset/);
  });

  it('an unset session.clientSecretEnv is reported as that field, naming the variable', () => {
    const s = sessionConfigSchema.parse({ issuer: 'https://idp.example.com', clientId: 'web', clientSecretEnv: 'WEB_SECRET', secretFiles: ['k'] });
    expect(() => resolveSessionSecrets(s, '/nonexistent', '/cfg/sidecar.yaml', {})).toThrow(/session\.clientSecretEnv: environment variable WEB_SECRET/);
  });
});

describe('worker IPC', () => {
  it('takes an ended browser session (one worker to the primary, the primary to the others) only well formed', () => {
    expect(isToPrimary({ t: 'session-ended', id: 'abc', untilMs: 1 })).toBe(true);
    expect(isToPrimary({ t: 'session-ended', id: 7, untilMs: 1 })).toBe(false);
    expect(isToWorker({ t: 'sessions-ended', ended: [['abc', 1]] })).toBe(true);
    expect(isToWorker({ t: 'sessions-ended', ended: [['abc', '1']] })).toBe(false);
    expect(isToWorker({ t: 'sessions-ended', ended: 'abc' })).toBe(false);
  });

  it('takes the messages of a shared refresh (cluster/once.ts) only well formed', () => {
    expect(isToPrimary({ t: 'once-claim', key: 'sid:hash' })).toBe(true);
    expect(isToPrimary({ t: 'once-claim' })).toBe(false);
    expect(isToPrimary({ t: 'once-decline', key: 'k' })).toBe(true);
    expect(isToPrimary({ t: 'once-decline', key: null })).toBe(false);
    expect(isToPrimary({ t: 'once-done', key: 'k', value: null, keepMs: 30_000 })).toBe(true);
    expect(isToPrimary({ t: 'once-done', key: 'k', keepMs: 30_000 })).toBe(false);
    expect(isToPrimary({ t: 'once-done', key: 'k', value: 1, keepMs: Number.NaN })).toBe(false);
    expect(isToWorker({ t: 'once-run', key: 'k' })).toBe(true);
    expect(isToWorker({ t: 'once-run', key: 1 })).toBe(false);
    expect(isToWorker({ t: 'once-value', key: 'k', value: { ok: true } })).toBe(true);
    expect(isToWorker({ t: 'once-value', key: 'k' })).toBe(false);
  });

  it('the primary refuses a state or metrics message it could not read (it threw in its handler)', () => {
    expect(isToPrimary({ t: 'state', state: {} })).toBe(false);
    expect(isToPrimary({ t: 'state', state: { ready: true, draining: false, policyVersion: null, ports: {} } })).toBe(false);
    expect(isToPrimary({ t: 'metrics', id: 1, text: 42 })).toBe(false);
    expect(isToPrimary({ t: 'state', state: { ready: true, draining: false, policyVersion: 'v1', ports: { inbound: 15006 }, status: {} } })).toBe(true);
    expect(isToPrimary({ t: 'metrics', id: 1, text: null })).toBe(true);
  });
});
