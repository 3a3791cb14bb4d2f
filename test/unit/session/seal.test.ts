import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { deriveKeys, MAX_SEALED_CHARS, Sealer } from '../../../src/session/seal.ts';

const secret = (): Uint8Array => randomBytes(32);
const NOW = 1_800_000_000_000;
const LATER = NOW + 60_000;

describe('sealing (AES-256-GCM, keys by HKDF)', () => {
  const s1 = secret();
  const sealer = new Sealer(deriveKeys([s1], 'session'), 'session');

  it('round-trips a payload until its sealed expiry, and not at or after it', () => {
    const sealed = sealer.seal({ sub: 'alice', n: 1 }, LATER, 'ward_session');
    expect(sealer.unseal(sealed, NOW, 'ward_session')).toEqual({ ok: true, value: { sub: 'alice', n: 1 }, expiresAt: LATER });
    expect(sealer.unseal(sealed, LATER - 1, 'ward_session').ok).toBe(true);
    expect(sealer.unseal(sealed, LATER, 'ward_session')).toEqual({ ok: false, reason: 'expired' });
  });

  it('hides the payload: no plaintext in the sealed value, and two seals of one payload differ', () => {
    const a = sealer.seal({ token: 'secret-access-token' }, LATER, 'c');
    const b = sealer.seal({ token: 'secret-access-token' }, LATER, 'c');
    expect(a).not.toBe(b); // random IV
    expect(Buffer.from(a, 'base64url').toString('latin1')).not.toContain('secret-access-token');
  });

  it('refuses any tampered byte (ciphertext, tag, IV, header)', () => {
    const sealed = sealer.seal({ roles: ['viewer'] }, LATER, 'c');
    const raw = Buffer.from(sealed, 'base64url');
    for (const i of [0, 1, 5, 10, 20, raw.length - 20, raw.length - 1]) {
      const t = Buffer.from(raw);
      t[i] = (t[i] as number) ^ 0x01;
      const r = sealer.unseal(t.toString('base64url'), NOW, 'c');
      expect(r.ok, `byte ${i}`).toBe(false);
    }
    // a truncated value, and one with bytes appended
    expect(sealer.unseal(sealed.slice(0, -4), NOW, 'c').ok).toBe(false);
    expect(sealer.unseal(`${sealed}AAAA`, NOW, 'c').ok).toBe(false);
  });

  it('refuses a value sealed with another key (another sidecar) or for another purpose or cookie', () => {
    const foreign = new Sealer(deriveKeys([secret()], 'session'), 'session').seal({ sub: 'mallory' }, LATER, 'c');
    expect(sealer.unseal(foreign, NOW, 'c')).toEqual({ ok: false, reason: 'unknown-key' });
    const txn = new Sealer(deriveKeys([s1], 'txn'), 'txn').seal({ sub: 'alice' }, LATER, 'c');
    expect(sealer.unseal(txn, NOW, 'c').ok).toBe(false); // same secret, other purpose: other key
    const other = sealer.seal({ sub: 'alice' }, LATER, 'other_cookie');
    expect(sealer.unseal(other, NOW, 'c')).toEqual({ ok: false, reason: 'integrity' });
  });

  it('accepts values sealed with a previous secret (rotation) and seals with the first', () => {
    const old = secret();
    const before = new Sealer(deriveKeys([old], 'session'), 'session').seal({ v: 'old' }, LATER, 'c');
    const rotated = new Sealer(deriveKeys([secret(), old], 'session'), 'session');
    expect(rotated.unseal(before, NOW, 'c')).toMatchObject({ ok: true, value: { v: 'old' } });
    const after = rotated.seal({ v: 'new' }, LATER, 'c');
    expect(new Sealer(deriveKeys([old], 'session'), 'session').unseal(after, NOW, 'c')).toEqual({ ok: false, reason: 'unknown-key' });
  });

  it('refuses garbage without throwing: empty, non-base64url, oversized, non-canonical base64url', () => {
    const sealed = sealer.seal({ a: 1 }, LATER, 'c');
    for (const bad of ['', '!!!', 'a b', 'x'.repeat(MAX_SEALED_CHARS + 1), `${sealed}=`, 'AQ']) {
      expect(sealer.unseal(bad, NOW, 'c').ok, bad.slice(0, 10)).toBe(false);
    }
    // the last base64url character can carry unused low bits: another spelling of the same bytes
    const last = sealed.at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet.split('').find((c) => c !== last && Buffer.from(`${sealed.slice(0, -1)}${c}`, 'base64url').equals(Buffer.from(sealed, 'base64url')));
    if (twin !== undefined) expect(sealer.unseal(`${sealed.slice(0, -1)}${twin}`, NOW, 'c')).toEqual({ ok: false, reason: 'malformed' });
  });

  it('refuses secrets shorter than 256 bits at start-up', () => {
    expect(() => deriveKeys([randomBytes(31)], 'session')).toThrow(/at least 32/);
    expect(() => deriveKeys([], 'session')).toThrow();
  });
});
