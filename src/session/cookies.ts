import { tokenHash } from '../lib/hash.ts';

/**
 * The sidecar's cookies: reading them out of the request's `Cookie` field (and out of what the
 * app receives: they are the sidecar's, never the app's), and writing `Set-Cookie` values.
 *
 * - The session cookie `<name>` carries the sealed session. A browser keeps at most about 4 KiB
 *   per cookie (RFC 6265 §6.1), so a larger sealed value is split over `<name>`, `<name>.1`, ...
 *   `<name>.<n-1>`; the first chunk then starts with `<n>.` (base64url has no dot, so this is
 *   unambiguous). At most MAX_CHUNKS chunks: a session larger than that is refused at sign-in.
 * - One transaction cookie per sign-in in flight, `<name>.t.<hash of state>`, path `/.ward/`
 *   (only the callback needs it; `/` for a `__Host-` name, below), ten minutes.
 *
 * Every cookie is HttpOnly (scripts cannot read it), SameSite=Lax (not sent on cross-site
 * subrequests or cross-site POSTs: the first half of the CSRF defence), Path=/, Secure when the
 * browser reaches us over TLS, and host-only (no Domain attribute).
 */

export const CHUNK_CHARS = 3800;
export const MAX_CHUNKS = 5;
export const TXN_PATH = '/.ward/';

export interface CookieNames {
  readonly session: string;
  /** `<session>.t.` */
  readonly txnPrefix: string;
  /** The transaction cookies' path: TXN_PATH, or `/` for a `__Host-` name (below). */
  readonly txnPath: string;
}

const HOST_PREFIX = '__Host-';

/**
 * The transaction cookies are named after the session cookie. A `__Host-` cookie is kept by a
 * browser only with `Path=/` (RFC 6265bis §4.1.3.2), so with a `__Host-` name they take `Path=/`
 * instead of TXN_PATH (regression: sign-in with the recommended `__Host-ward_session` never
 * completed) and keep the prefix: a sibling subdomain must not be able to plant its own
 * transaction cookie either (sign-in CSRF by cookie tossing). They are sent with the app's
 * requests for the ten minutes a sign-in lasts, and taken out before the app sees them.
 */
export function cookieNames(session: string): CookieNames {
  return Object.freeze({ session, txnPrefix: `${session}.t.`, txnPath: session.startsWith(HOST_PREFIX) ? '/' : TXN_PATH });
}

export function txnCookieName(names: CookieNames, state: string): string {
  return `${names.txnPrefix}${tokenHash(state).slice(0, 12)}`;
}

export interface TakenCookies {
  /** The session cookie's chunks by index (0 = `<name>`); null when there is none. */
  readonly session: ReadonlyMap<number, string> | null;
  /** A session cookie name appeared twice (cookie tossing from a parent domain, or a bug). */
  readonly duplicate: boolean;
  /** Transaction cookies by name. */
  readonly txn: ReadonlyMap<string, string>;
  /** The `Cookie` field for the app without the sidecar's cookies; undefined when nothing is left. */
  readonly rest: string | undefined;
}

const NONE: TakenCookies = Object.freeze({ session: null, duplicate: false, txn: new Map<string, string>(), rest: undefined });

/**
 * Splits a `Cookie` field (RFC 6265 §5.4: `name=value` pairs separated by `; `) into the
 * sidecar's cookies and the rest. Lenient about spacing, strict about ownership: any pair whose
 * name is ours is taken out, so the app never sees the session.
 */
export function takeCookies(header: string | undefined, names: CookieNames): TakenCookies {
  if (header === undefined || !header.includes(names.session)) return header === undefined ? NONE : { ...NONE, rest: header };
  let session: Map<number, string> | null = null;
  let duplicate = false;
  const txn = new Map<string, string>();
  const rest: string[] = [];
  for (const part of header.split(';')) {
    const pair = part.trim();
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = eq === -1 ? pair : pair.slice(0, eq).trim();
    const value = eq === -1 ? '' : pair.slice(eq + 1).trim();
    const index = chunkIndex(name, names.session);
    if (index !== -1) {
      session ??= new Map();
      if (session.has(index)) duplicate = true;
      session.set(index, value);
    } else if (name.startsWith(names.txnPrefix)) {
      if (txn.has(name)) duplicate = true;
      txn.set(name, value);
    } else {
      rest.push(pair);
    }
  }
  return { session, duplicate, txn, rest: rest.length === 0 ? undefined : rest.join('; ') };
}

/** 0 for `<base>`, i for `<base>.i` (1 <= i < MAX_CHUNKS), else -1. */
function chunkIndex(name: string, base: string): number {
  if (name === base) return 0;
  if (name.length !== base.length + 2 || !name.startsWith(base) || name.charCodeAt(base.length) !== 0x2e) return -1;
  const d = name.charCodeAt(base.length + 1) - 0x30;
  return d >= 1 && d < MAX_CHUNKS ? d : -1;
}

/** The sealed value from its chunks, or null when they do not fit together. */
export function joinChunks(chunks: ReadonlyMap<number, string>): string | null {
  const first = chunks.get(0);
  if (first === undefined) return null;
  const dot = first.indexOf('.');
  if (dot === -1) return chunks.size === 1 ? first : null;
  const n = Number(first.slice(0, dot));
  if (!Number.isInteger(n) || n < 2 || n > MAX_CHUNKS || String(n) !== first.slice(0, dot) || chunks.size !== n) return null;
  let out = first.slice(dot + 1);
  for (let i = 1; i < n; i++) {
    const c = chunks.get(i);
    if (c === undefined) return null;
    out += c;
  }
  return out;
}

/** The chunk values for a sealed value; null when it needs more than MAX_CHUNKS cookies. */
export function splitChunks(sealed: string): string[] | null {
  if (sealed.length <= CHUNK_CHARS) return [sealed];
  const n = Math.ceil((sealed.length + 2) / CHUNK_CHARS);
  if (n > MAX_CHUNKS) return null;
  const out: string[] = [];
  const body = `${n}.${sealed}`;
  for (let i = 0; i < n; i++) out.push(body.slice(i * CHUNK_CHARS, (i + 1) * CHUNK_CHARS));
  return out;
}

export interface CookieAttributes {
  readonly secure: boolean;
  readonly path: string;
  /** Seconds; 0 expires the cookie now. */
  readonly maxAge: number;
}

export function setCookie(name: string, value: string, a: CookieAttributes): string {
  return `${name}=${value}; Path=${a.path}; Max-Age=${Math.max(0, Math.floor(a.maxAge))}; HttpOnly; SameSite=Lax${a.secure ? '; Secure' : ''}`;
}

export function clearCookie(name: string, secure: boolean, path = '/'): string {
  return setCookie(name, '', { secure, path, maxAge: 0 });
}

/**
 * `Set-Cookie` values that store `chunks` as the session and expire the chunks the browser
 * still holds beyond them (a shorter session must not be read with a stale tail).
 */
export function sessionCookies(names: CookieNames, chunks: readonly string[], present: ReadonlyMap<number, string> | null, a: CookieAttributes): string[] {
  const out = chunks.map((c, i) => setCookie(i === 0 ? names.session : `${names.session}.${i}`, c, a));
  if (present !== null) for (const i of present.keys()) if (i >= chunks.length) out.push(clearCookie(`${names.session}.${i}`, a.secure));
  return out;
}

/** `Set-Cookie` values expiring every session chunk the browser sent. */
export function clearSessionCookies(names: CookieNames, present: ReadonlyMap<number, string> | null, secure: boolean): string[] {
  if (present === null) return [];
  return [...present.keys()].map((i) => clearCookie(i === 0 ? names.session : `${names.session}.${i}`, secure));
}
