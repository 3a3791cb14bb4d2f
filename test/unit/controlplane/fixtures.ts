import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../../src/lib/log.ts';

/**
 * Policies and helpers shared by the control-plane tests. `policy(service, methods)` is a valid
 * policy file text; different `methods` give different versions.
 */
export function policy(service: string, methods: readonly string[] = ['GetOrder'], issuer = 'http://127.0.0.1:4400'): string {
  return `apiVersion: ward.dev/v1
kind: Policy
service: ${service}
issuers:
  - issuer: ${issuer}
    audiences: [urn:ward:${service}]
rules:
  - name: readers
    action: allow
    match:
      grpc: [${methods.map((m) => `/ward.demo.v1.Orders/${m}`).join(', ')}]
`;
}

/** A policy with a schema error on line 9 (`rules[0].action`). */
export function invalidPolicy(service: string): string {
  return policy(service).replace('action: allow', 'action: maybe');
}

export function tempDir(prefix = 'ward-cp-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A logger that keeps records for assertions. */
export function memoryLogger(): { log: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'debug', sink: { write: (line) => records.push(JSON.parse(line) as Record<string, unknown>) } });
  return { log, records };
}

/** Resolves when `check()` is true, polling every few ms; rejects after `ms` (a safety net, not a timing assertion). */
export async function eventually(check: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Publishes `files` the way the kubelet updates a ConfigMap volume: a new `..<timestamp>`
 * directory, a temp symlink to it renamed over `..data` (atomic), and visible `name.yaml ->
 * ..data/name.yaml` symlinks created once.
 */
export function configMap(d: string, gen: string, files: Record<string, string>): void {
  mkdirSync(join(d, gen));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, gen, name), text);
  symlinkSync(gen, join(d, '..data_tmp'));
  renameSync(join(d, '..data_tmp'), join(d, '..data'));
  for (const name of Object.keys(files)) {
    try {
      symlinkSync(join('..data', name), join(d, name));
    } catch {
      // the visible symlink already exists and now points into the new generation
    }
  }
}

/** A policy valid for the control plane that a sidecar compiles only with the HMAC secret in `env` set. */
export function needsSecretPolicy(env: string): string {
  return `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: http://127.0.0.1:4400
    audiences: [urn:ward:orders]
    algorithms: [HS256]
    hmacSecretEnv: ${env}
rules:
  - name: readers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
`;
}

