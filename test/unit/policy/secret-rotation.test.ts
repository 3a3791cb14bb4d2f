import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Authenticator, createAuthenticator } from '../../../src/authn/authenticator.ts';
import { createLogger, silentLogger } from '../../../src/lib/log.ts';
import { createFilePolicySource, type FilePolicySourceOptions, type PolicySource } from '../../../src/policy/source.ts';
import { hmacPolicy, hs256, kubeletSecretDir, plainSecretDir, type SecretDir, SECRET_A, SECRET_B, SECRET_C, SHORT_SECRET } from './secret-files.ts';

/**
 * A rotated `hmacSecretFile` takes effect without a change of the policy text (regression: the
 * file source hashed only the policy text, so the sidecar verified with the old secret until
 * someone edited the policy). The secret lives in another directory than the policy, as a
 * Kubernetes Secret volume does beside a ConfigMap volume. Tokens go through the authenticator
 * the sidecar wires to the source (`onChange` -> `setIssuers`), verified-token cache on.
 */

interface Rig {
  readonly secret: SecretDir;
  readonly policyFile: string;
  /** `hmacSecretFile` as the policy names it. */
  readonly ref: string;
  readonly source: PolicySource;
  readonly authn: Authenticator;
  readonly logs: Record<string, unknown>[];
  /** The authenticator's verdict on a token signed with `secret`: 'OK' or the error code. */
  verify(secret: string): Promise<string>;
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function rig(secret: SecretDir, opts: Partial<FilePolicySourceOptions> = {}): Rig {
  cleanups.push(() => secret.cleanup());
  const policyDir = mkdtempSync(join(tmpdir(), 'ward-policy-'));
  cleanups.push(() => rmSync(policyDir, { recursive: true, force: true }));
  const policyFile = join(policyDir, 'orders.yaml');
  // relative to the policy file's directory, as operators write it
  const ref = relative(policyDir, secret.file);
  writeFileSync(policyFile, hmacPolicy(ref));
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'debug', sink: { write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) } });
  const authn = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries: 100,
    introspectionCacheMaxSeconds: 60,
    jwks: { timeoutMs: 2000, refreshIntervalMs: 3_600_000, cooldownMs: 30_000, graceMs: 600_000 },
    credentials: [],
    log: silentLogger,
  });
  cleanups.push(() => authn.close());
  const source = createFilePolicySource(policyFile, {
    service: 'orders',
    log,
    pollMs: 20,
    debounceMs: 10,
    onChange: (p) => authn.setIssuers(p.issuers),
    ...opts,
  });
  cleanups.push(() => source.close());
  authn.setIssuers(source.current()?.issuers ?? []);
  return {
    secret,
    policyFile,
    ref,
    source,
    authn,
    logs,
    verify: async (s) => {
      const r = await authn.authenticate(await hs256(s));
      return r.ok ? 'OK' : r.error.code;
    },
  };
}

/** Polls `check` until it holds; the deadline is a safety net, far above the poll period. */
async function eventually(check: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rotation to B: B verifies, A (even a token verified and cached before) is refused. */
async function rotateToB(r: Rig): Promise<void> {
  const tokenA = await hs256(SECRET_A);
  expect((await r.authn.authenticate(tokenA)).ok).toBe(true); // now in the verified-token cache
  expect(await r.verify(SECRET_B)).toBe('ERR_TOKEN_SIGNATURE');
  const version = r.source.current()?.version;

  r.secret.replace(`${SECRET_B}\n`);
  await eventually(async () => (await r.verify(SECRET_B)) === 'OK', 'a token signed with B to verify');
  const a = await r.authn.authenticate(tokenA);
  expect(a.ok ? 'OK' : a.error.code).toBe('ERR_TOKEN_SIGNATURE');
  expect(await r.verify(SECRET_A)).toBe('ERR_TOKEN_SIGNATURE');
  expect(Buffer.from(r.source.current()?.issuers[0]?.hmacSecret ?? []).toString()).toBe(SECRET_B);

  // The version names the policy text, which did not change; the swap says why it happened.
  expect(r.source.current()?.version).toBe(version);
  expect(r.source.lastError()).toBeNull();
  expect(r.logs).toContainEqual(
    expect.objectContaining({ msg: 'policy updated', reason: 'referenced file changed', referencedFiles: [r.secret.file], version, previous: version }),
  );
  for (const secret of [SECRET_A, SECRET_B]) expect(JSON.stringify(r.logs)).not.toContain(secret); // never the secret itself
}

describe('hmacSecretFile rotation (file policy source)', () => {
  it('a plain rewrite of the secret file takes effect: B verifies, A no longer does', async () => {
    await rotateToB(rig(plainSecretDir(`${SECRET_A}\n`)));
  });

  it('a Kubernetes Secret update (..data symlink swap) takes effect', async () => {
    await rotateToB(rig(kubeletSecretDir(SECRET_A)));
  });

  it('a Kubernetes Secret update is seen by directory events alone (the poll too slow to matter)', async () => {
    await rotateToB(rig(kubeletSecretDir(SECRET_A), { pollMs: 60_000 }));
  });

  it('a plain rewrite is seen by the stat poll alone (no fs.watch)', async () => {
    await rotateToB(rig(plainSecretDir(SECRET_A), { watch: false }));
  });

  for (const [layout, make] of [['plain file', plainSecretDir], ['Kubernetes Secret volume', kubeletSecretDir]] as const) {
    it(`${layout}: an empty, too short or missing secret is refused, the old one stays, and a good one recovers`, async () => {
      const r = rig(make(SECRET_A));
      const version = r.source.current()?.version;
      const refusals = (): number => r.logs.filter((l) => l['msg'] === 'policy update refused; keeping the last good version').length;
      const refusedWith = async (message: RegExp, what: string): Promise<void> => {
        const before = refusals();
        await eventually(() => refusals() > before, what);
        const err = r.source.lastError();
        expect(err?.issues).toEqual([expect.objectContaining({ path: 'issuers[0].hmacSecretFile', message: expect.stringMatching(message) })]);
        // the last good policy, with the old secret, stays in force
        expect(await r.verify(SECRET_A)).toBe('OK');
        expect(await r.verify(SECRET_C)).toBe('ERR_TOKEN_SIGNATURE');
        expect(Buffer.from(r.source.current()?.issuers[0]?.hmacSecret ?? []).toString()).toBe(SECRET_A);
        expect(r.source.current()?.version).toBe(version);
      };

      r.secret.replace('');
      await refusedWith(/^HMAC secret is 0 bytes; HS256 needs at least 32/, 'the empty secret to be refused');
      r.secret.replace('\n');
      await refusedWith(/^HMAC secret is 0 bytes/, 'a secret of only a newline to be refused');
      r.secret.replace(SHORT_SECRET);
      await refusedWith(/^HMAC secret is 16 bytes; HS256 needs at least 32/, 'the short secret to be refused');
      r.secret.remove();
      await refusedWith(new RegExp(`^cannot read ${r.secret.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ENOENT$`), 'the missing secret to be refused');

      r.secret.replace(SECRET_C);
      await eventually(async () => (await r.verify(SECRET_C)) === 'OK', 'the good secret to be taken');
      expect(r.source.lastError()).toBeNull();
      expect(await r.verify(SECRET_A)).toBe('ERR_TOKEN_SIGNATURE');
      expect(r.source.current()?.version).toBe(version);
      expect(JSON.stringify(r.logs)).not.toContain(SHORT_SECRET);
    });
  }

  it('a broken edit of the policy text does not hold up a rotation, and stays reported', async () => {
    const r = rig(plainSecretDir(SECRET_A));
    writeFileSync(r.policyFile, hmacPolicy(r.ref).replace('action: allow', 'action: maybe'));
    await eventually(() => r.source.lastError() !== null, 'the broken edit to be refused');
    r.secret.replace(SECRET_B);
    await eventually(async () => (await r.verify(SECRET_B)) === 'OK', 'a token signed with B to verify');
    expect(await r.verify(SECRET_A)).toBe('ERR_TOKEN_SIGNATURE');
    expect(r.source.lastError()?.issues[0]?.path).toBe('rules[0].action');
  });

  it('a text change and a new secret together: one update, with the new version', async () => {
    const r = rig(plainSecretDir(SECRET_A));
    const before = r.source.current()?.version;
    r.secret.replace(SECRET_B);
    writeFileSync(r.policyFile, hmacPolicy(r.ref, ['GetOrder', 'ListOrders']));
    await eventually(() => r.source.current()?.version !== before && r.source.current()?.issuers[0]?.hmacSecret?.length === 32 && Buffer.from(r.source.current()?.issuers[0]?.hmacSecret ?? []).toString() === SECRET_B, 'the new version with B');
    expect(await r.verify(SECRET_B)).toBe('OK');
    expect(r.logs).toContainEqual(expect.objectContaining({ msg: 'policy updated', reason: 'policy changed', previous: before }));
  });

  it('an untouched secret and a comment-only edit swap nothing', async () => {
    const r = rig(plainSecretDir(SECRET_A));
    const p = r.source.current();
    writeFileSync(r.policyFile, `# a comment\n${hmacPolicy(r.ref)}`);
    r.secret.replace(SECRET_A); // same bytes, new mtime
    await new Promise((res) => setTimeout(res, 150)); // several poll periods: nothing may happen
    expect(r.source.current()).toBe(p);
    expect(r.logs.filter((l) => l['msg'] === 'policy updated')).toEqual([]);
  });
});
