import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { createLogger } from '../../../src/lib/log.ts';
import { MAX_DEPTH } from '../../../src/lib/yaml-schema.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { createFilePolicySource, type FilePolicySourceOptions, type PolicySource } from '../../../src/policy/source.ts';
import { ordersPolicyText } from '../../fixtures/policies/fixtures.ts';

const V1 = ordersPolicyText();
const V2 = V1.replace('scopes: { allOf: [orders.write] }', 'scopes: { allOf: [orders.write, orders.admin] }');
const INVALID = V1.replace('action: deny', 'action: forbid');

interface Harness {
  readonly file: string;
  readonly source: PolicySource;
  readonly logs: Record<string, unknown>[];
  /** Resolves on the next onChange. */
  nextChange(): Promise<CompiledPolicy>;
  /** Resolves when a log line with this message arrives. */
  nextLog(msg: string): Promise<Record<string, unknown>>;
}

const open: PolicySource[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function start(initial: string, opts: Partial<FilePolicySourceOptions> = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'ward-policy-src-'));
  const file = join(dir, 'orders.policy.yaml');
  writeFileSync(file, initial);
  const logs: Record<string, unknown>[] = [];
  const logWaiters: { msg: string; resolve: (r: Record<string, unknown>) => void }[] = [];
  const changeWaiters: ((p: CompiledPolicy) => void)[] = [];
  const log = createLogger({
    level: 'debug',
    sink: {
      write: (line) => {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        for (const w of logWaiters.splice(0)) {
          if (w.msg === rec['msg']) w.resolve(rec);
          else logWaiters.push(w);
        }
      },
    },
  });
  const source = createFilePolicySource(file, {
    service: 'orders',
    log,
    debounceMs: 10,
    pollMs: 25,
    onChange: (p) => changeWaiters.splice(0).forEach((w) => w(p)),
    ...opts,
  });
  open.push(source);
  return {
    file,
    source,
    logs,
    nextChange: () => new Promise((resolve) => changeWaiters.push(resolve)),
    nextLog: (msg) => new Promise((resolve) => logWaiters.push({ msg, resolve })),
  };
}

describe('createFilePolicySource', () => {
  it('loads at start and logs the version', () => {
    const h = start(V1);
    const p = h.source.current();
    expect(p?.service).toBe('orders');
    expect(h.source.lastError()).toBeNull();
    expect(h.logs).toContainEqual(expect.objectContaining({ msg: 'policy loaded', version: p?.version }));
  });

  it('throws a ConfigError at start-up for an invalid file or another service', () => {
    expect(() => start(INVALID)).toThrow(ConfigError);
    expect(() => start(V1.replace('service: orders', 'service: payments'))).toThrow(/policy is for service "payments" but this sidecar guards "orders"/);
  });

  it('swaps to a valid new version and logs "policy updated"', async () => {
    const h = start(V1);
    const before = h.source.current();
    const changed = h.nextChange();
    writeFileSync(h.file, V2);
    const p = await changed;
    expect(p.version).not.toBe(before?.version);
    expect(h.source.current()).toBe(p);
    expect(h.logs).toContainEqual(expect.objectContaining({ msg: 'policy updated', version: p.version, previous: before?.version }));
  });

  it('refuses an invalid new version, logs file:line:col, keeps the last good one, recovers on a valid one', async () => {
    const h = start(V1);
    const good = h.source.current();
    const refused = h.nextLog('policy update refused; keeping the last good version');
    writeFileSync(h.file, INVALID);
    const rec = await refused;
    expect(rec['errors']).toEqual([`${h.file}:14:13: rules[0].action: Invalid option: expected one of "allow"|"deny"`]);
    expect(h.source.current()).toBe(good);
    expect(h.source.lastError()?.issues[0]?.path).toBe('rules[0].action');

    const changed = h.nextChange();
    writeFileSync(h.file, V2);
    await changed;
    expect(h.source.lastError()).toBeNull();
  });

  it('refuses a version nested too deep for the checks, with its place, and stays up (regression: ~700 levels of any: overflowed the stack in the reload timer and ended the process)', async () => {
    const h = start(V1);
    const good = h.source.current();
    for (const depth of [MAX_DEPTH, 720]) {
      let cond = '{ scopes: { allOf: [orders.write] } }';
      for (let i = 0; i < depth; i++) cond = `{ any: [${cond}] }`;
      const refused = h.nextLog('policy update refused; keeping the last good version');
      writeFileSync(h.file, V1.replace('scopes: { allOf: [orders.write] }', cond.slice(2, -2)));
      const rec = await refused;
      // Refused with a place in the file: by the depth check, or by the YAML parser itself
      // when its own recursion gives out first (it reports that as a parse error).
      expect((rec['errors'] as string[])[0]).toMatch(new RegExp(`^${h.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: (rules\\[\\d+\\]\\.when\\[0\\](\\.any\\[0\\])+: nested more than ${MAX_DEPTH} levels deep|Maximum call stack size exceeded)$`));
      expect(h.source.current()).toBe(good);
    }
  });

  it('refuses a new version for another service', async () => {
    const h = start(V1);
    const refused = h.nextLog('policy update refused; keeping the last good version');
    writeFileSync(h.file, V2.replace('service: orders', 'service: payments'));
    const rec = await refused;
    expect(String((rec['errors'] as string[])[0])).toContain('service: policy is for service "payments"');
    expect(h.source.current()?.service).toBe('orders');
  });

  it('picks up an atomic rename-replace', async () => {
    const h = start(V1);
    const before = h.source.current()?.version;
    const changed = h.nextChange();
    const tmp = `${h.file}.tmp`;
    writeFileSync(tmp, V2);
    renameSync(tmp, h.file);
    const p = await changed;
    expect(h.source.current()).toBe(p);
    expect(p.version).not.toBe(before);
  });

  it('falls back to polling when directory events are not available', async () => {
    const h = start(V1, { watch: false });
    const changed = h.nextChange();
    writeFileSync(h.file, V2);
    const p = await changed;
    expect(h.source.current()).toBe(p);
  });
});
