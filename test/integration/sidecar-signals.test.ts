import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));
const TERM_ON_START = fileURLToPath(new URL('../support/term-on-start.js', import.meta.url));

const POLICY = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: http://127.0.0.1:9
    audiences: [urn:ward:orders]
    algorithms: [RS256]
rules: []
`;

/**
 * A SIGTERM that arrives as the sidecar says it started (a pod deleted as it comes up) must drain
 * it and exit 0. Regression: the commands installed their signal listener only after start-up
 * returned, so a signal in between killed the process (exit by signal, nothing drained); the
 * footprint test, which stops its sidecars as soon as they log "sidecar started", failed about
 * once in ten runs for it. Here the signal comes from inside the process, synchronously with that
 * log line, so the old code fails every time.
 */
describe('ward sidecar and signals', () => {
  it.each([
    ['a policy file', 'policy: { file: policy.yaml }\n'],
    ['a policy file, two workers', 'policy: { file: policy.yaml }\nconcurrency: 2\n'],
    [
      'a control plane',
      'policy:\n  controlPlane: { address: "127.0.0.1:9", stateDir: state, issuer: "http://127.0.0.1:9", instanceId: signals }\n' +
        'authn:\n  credentials:\n    - { issuer: "http://127.0.0.1:9", clientId: orders-sidecar, clientSecretFile: client-secret }\n',
    ],
  ])('drains and exits 0 on a SIGTERM at the instant it has started (%s)', async (_name, policy) => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-signals-'));
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    writeFileSync(join(dir, 'client-secret'), 'not-a-real-secret\n');
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      `service: orders
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:9" }
admin: { host: 127.0.0.1, port: 0 }
${policy}telemetry: { enabled: false }
drainTimeoutMs: 100
`,
    );
    const child = spawn(process.execPath, ['--import', TERM_ON_START, WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, s) => r([c, s])));
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(stderr).toContain('"msg":"signal received"');
    expect(stderr).toContain('"msg":"stopped"');
  });
});
