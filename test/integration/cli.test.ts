import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

function ward(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [WARD, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('ward command', () => {
  it('lists its subcommands with --help', async () => {
    const r = await ward(['--help']);
    expect(r.code).toBe(0);
    for (const sub of ['sidecar', 'policy', 'dev-idp', 'demo', 'control-plane', 'status', 'inject', 'injector', 'capture']) expect(r.stdout).toContain(sub);
  });

  it.each(['sidecar', 'policy', 'dev-idp', 'demo', 'control-plane', 'status', 'policy check', 'policy explain', 'inject', 'injector', 'capture'])('ward %s --help prints usage and exits 0', async (sub) => {
    const r = await ward([...sub.split(' '), '--help']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: ward /);
  });

  it('refuses an unknown command and unknown flags with exit 2', async () => {
    expect((await ward(['nope'])).code).toBe(2);
    const r = await ward(['sidecar', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bogus');
  });

  it('fails at start-up with file:line:column on a bad sidecar config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-cli-'));
    const file = join(dir, 'sidecar.yaml');
    writeFileSync(file, 'service: orders\ninbound:\n  listen: { port: 99999 }\nupstream:\n  url: http://127.0.0.1:1\npolicy:\n  file: p.yaml\n');
    const r = await ward(['sidecar', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}:3:`);
    expect(r.stderr).toContain('inbound.listen.port');
  });
});

describe('ward sidecar start-up checks', () => {
  it('refuses to start when the policy introspects but no credentials are configured', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-cli-'));
    writeFileSync(
      join(dir, 'policy.yaml'),
      'apiVersion: ward.dev/v1\nkind: Policy\nservice: orders\nissuers:\n  - issuer: http://127.0.0.1:1\n    audiences: [a]\n    introspection: true\nrules:\n  - name: r\n    action: allow\n    match: { grpc: ["/a.B/*"] }\n',
    );
    const file = join(dir, 'sidecar.yaml');
    writeFileSync(file, 'service: orders\ninbound:\n  listen: { port: 0, host: 127.0.0.1 }\nupstream:\n  url: http://127.0.0.1:1\nadmin: { port: 0 }\npolicy:\n  file: policy.yaml\n');
    const r = await ward(['sidecar', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('authn.credentials');
    expect(r.stderr).toContain('no credentials');
  });

  it('refuses to start on an invalid policy file, naming file:line:column', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-cli-'));
    writeFileSync(join(dir, 'policy.yaml'), 'apiVersion: ward.dev/v1\nkind: Policy\nservice: orders\nissuers: []\nrules:\n  - name: r\n    action: permit\n');
    const file = join(dir, 'sidecar.yaml');
    writeFileSync(file, 'service: orders\ninbound:\n  listen: { port: 0, host: 127.0.0.1 }\nupstream:\n  url: http://127.0.0.1:1\nadmin: { port: 0 }\npolicy:\n  file: policy.yaml\n');
    const r = await ward(['sidecar', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${join(dir, 'policy.yaml')}:7:`);
  });
});

describe('a failed command keeps its output', () => {
  // Regression: bin/ward.js ends a failed command's process after 2 s (whatever it could not
  // close must not keep it alive), and at first did so with output still queued for a pipe whose
  // reader had not caught up, a pager for one: it was lost.
  it('ward policy check piped to a reader that starts after 3 s gets every line, and the exit status 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-exit-'));
    writeFileSync(join(dir, 'good.yaml'), 'apiVersion: ward.dev/v1\nkind: Policy\nservice: orders\nissuers:\n  - issuer: https://idp.example\n    audiences: [orders]\nrules: []\n');
    writeFileSync(join(dir, 'bad.yaml'), 'apiVersion: ward.dev/v1\nkind: Policy\n');
    // ~2000 lines of ~70 bytes: well past a pipe's 64 KiB.
    const script = `"${process.execPath}" "${WARD}" policy check --skip-secrets $(for i in $(seq 2000); do echo good.yaml; done) bad.yaml 2>/dev/null | (sleep 3; wc -l); echo "rc=\${PIPESTATUS[0]}"`;
    const out = await new Promise<string>((resolve, reject) => {
      execFile('bash', ['-c', script], { cwd: dir, timeout: 20_000 }, (err, stdout) => (err === null ? resolve(stdout) : reject(new Error(err.message))));
    });
    const [lines, rc] = out.trim().split('\n');
    expect(rc).toBe('rc=1');
    expect(Number(lines)).toBe(2000);
  }, 25_000);
});
