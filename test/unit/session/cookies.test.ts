import { describe, expect, it } from 'vitest';
import {
  CHUNK_CHARS,
  clearSessionCookies,
  cookieNames,
  joinChunks,
  MAX_CHUNKS,
  sessionCookies,
  setCookie,
  splitChunks,
  takeCookies,
  txnCookieName,
} from '../../../src/session/cookies.ts';

const names = cookieNames('ward_session');

describe('session cookies', () => {
  it('takes the sidecar\'s cookies out of the Cookie field and leaves the app\'s', () => {
    const t = takeCookies('app=1; ward_session=abc; theme=dark; ward_session.t.x1=txn; ward_sessionx=keep', names);
    expect(t.session).toEqual(new Map([[0, 'abc']]));
    expect(t.txn).toEqual(new Map([['ward_session.t.x1', 'txn']]));
    expect(t.rest).toBe('app=1; theme=dark; ward_sessionx=keep');
    expect(t.duplicate).toBe(false);
    expect(takeCookies('ward_session=abc', names).rest).toBeUndefined();
    expect(takeCookies('a=1', names)).toMatchObject({ session: null, rest: 'a=1' });
    expect(takeCookies(undefined, names)).toMatchObject({ session: null, rest: undefined });
  });

  it('flags a session cookie sent twice (cookie tossing from a parent domain)', () => {
    expect(takeCookies('ward_session=a; ward_session=b', names).duplicate).toBe(true);
  });

  it('splits a large sealed value over numbered cookies and joins them back', () => {
    const small = 'a'.repeat(100);
    expect(splitChunks(small)).toEqual([small]);
    expect(joinChunks(new Map([[0, small]]))).toBe(small);
    const big = 'b'.repeat(CHUNK_CHARS * 2 + 10);
    const chunks = splitChunks(big) as string[];
    expect(chunks).toHaveLength(3);
    expect(chunks.every((c) => c.length <= CHUNK_CHARS)).toBe(true);
    expect(joinChunks(new Map(chunks.map((c, i) => [i, c])))).toBe(big);
    // a missing, extra or stale chunk does not join
    expect(joinChunks(new Map([[0, chunks[0] as string], [1, chunks[1] as string]]))).toBeNull();
    expect(joinChunks(new Map([[0, small], [1, 'stale']]))).toBeNull();
    expect(splitChunks('c'.repeat(CHUNK_CHARS * MAX_CHUNKS))).toBeNull(); // too large: refused
  });

  it('writes HttpOnly, SameSite=Lax, host-only cookies, Secure only over TLS', () => {
    expect(setCookie('ward_session', 'v', { secure: false, path: '/', maxAge: 60 })).toBe('ward_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax');
    const tls = setCookie('ward_session', 'v', { secure: true, path: '/', maxAge: 60 });
    expect(tls).toContain('; Secure');
    expect(tls).not.toMatch(/Domain=/i);
  });

  it('expires chunks the browser holds beyond a shorter new session, and all of them on logout', () => {
    const present = new Map([[0, 'x'], [1, 'y'], [2, 'z']]);
    const out = sessionCookies(names, ['new'], present, { secure: false, path: '/', maxAge: 100 });
    expect(out[0]).toMatch(/^ward_session=new;/);
    expect(out.slice(1)).toEqual([expect.stringMatching(/^ward_session\.1=; .*Max-Age=0/), expect.stringMatching(/^ward_session\.2=; .*Max-Age=0/)]);
    expect(clearSessionCookies(names, present, true)).toHaveLength(3);
  });

  it('names a transaction cookie after its state, without revealing it', () => {
    const n = txnCookieName(names, 'state-value');
    expect(n.startsWith('ward_session.t.')).toBe(true);
    expect(n).not.toContain('state-value');
    expect(txnCookieName(names, 'other')).not.toBe(n);
  });
});
