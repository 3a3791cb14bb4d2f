/**
 * Cross-site request forgery on session-authenticated calls. A browser attaches the session
 * cookie by itself, so a state-changing request must also prove it comes from a page of this
 * origin. Two layers (OWASP CSRF cheat sheet, "defense in depth"):
 *
 * 1. SameSite=Lax on the cookie: a cross-site POST, PUT, PATCH or DELETE carries no session.
 * 2. This check, for every unsafe method: `Sec-Fetch-Site`, when sent, must be `same-origin` (or
 *    `none`, a user-initiated navigation); `Origin`, when sent, must be exactly this origin
 *    (`null` is refused: sandboxed frames, privacy redirects); without `Origin`, `Referer` must
 *    be a URL of this origin; with neither, the request is refused (fail closed). A sibling
 *    subdomain is same-site but not same-origin, so SameSite alone does not stop it; this does.
 */

/** RFC 9110 §9.2.1 safe methods: they must not change state, so they need no proof. */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

export function isUnsafeMethod(method: string): boolean {
  return !SAFE.has(method);
}

export interface OriginEvidence {
  readonly origin: string | undefined;
  readonly referer: string | undefined;
  readonly secFetchSite: string | undefined;
}

/** The normalized origin (`scheme://host[:port]`) of a URL, or null. */
export function originOf(url: string): string | null {
  try {
    const o = new URL(url).origin;
    return o === 'null' ? null : o;
  } catch {
    return null;
  }
}

/** True when the evidence shows the request was made by a page of `expected` (a normalized origin). */
export function fromSameOrigin(e: OriginEvidence, expected: string): boolean {
  if (e.secFetchSite !== undefined) {
    const site = e.secFetchSite.trim().toLowerCase();
    if (site !== 'same-origin' && site !== 'none') return false;
  }
  if (e.origin !== undefined) {
    const o = e.origin.trim();
    if (o === 'null') return false;
    return originOf(o) === expected && !o.includes('/', o.indexOf('//') + 2);
  }
  if (e.referer !== undefined) return originOf(e.referer.trim()) === expected;
  return false;
}
