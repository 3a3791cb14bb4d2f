import type { Identity } from './model.ts';

/**
 * Builds the `Identity` policy sees from a verified claim set (JWT payload or RFC 7662
 * introspection response). One place for the conventions, so authn and `ward policy explain`
 * agree: subject = `sub`, else `client_id`; scopes from space-delimited `scope` or an `scp`
 * list; actors from the RFC 8693 §4.1 `act` chain, most recent first.
 */

/** Longest `act` chain read; deeper nesting is ignored (a token is not a place for recursion bombs). */
export const MAX_ACT_DEPTH = 16;

export function identityFromClaims(
  claims: Readonly<Record<string, unknown>>,
  issuer?: string,
  tokenKind: Identity['tokenKind'] = 'jwt',
): Identity {
  const iss = typeof claims['iss'] === 'string' ? claims['iss'] : (issuer ?? '');
  const sub = typeof claims['sub'] === 'string' && claims['sub'] !== '' ? claims['sub'] : typeof claims['client_id'] === 'string' ? claims['client_id'] : '';
  const exp = typeof claims['exp'] === 'number' && Number.isFinite(claims['exp']) ? claims['exp'] : 0;
  return Object.freeze({
    issuer: iss,
    subject: sub,
    claims,
    tokenKind,
    expiresAt: exp,
    actors: Object.freeze(actorsOf(claims)),
    scopes: scopesOf(claims),
  });
}

export function scopesOf(claims: Readonly<Record<string, unknown>>): ReadonlySet<string> {
  const out = new Set<string>();
  const scope = claims['scope'];
  if (typeof scope === 'string') {
    for (const s of scope.split(' ')) if (s !== '') out.add(s);
  } else if (Array.isArray(scope)) {
    for (const s of scope) if (typeof s === 'string' && s !== '') out.add(s);
  }
  const scp = claims['scp'];
  if (Array.isArray(scp)) {
    for (const s of scp) if (typeof s === 'string' && s !== '') out.add(s);
  } else if (typeof scp === 'string') {
    for (const s of scp.split(' ')) if (s !== '') out.add(s);
  }
  return out;
}

/** `act.sub`, `act.act.sub`, …: the immediate actor first. A link without a string `sub` (or `client_id`) ends the chain. */
export function actorsOf(claims: Readonly<Record<string, unknown>>): string[] {
  const out: string[] = [];
  let act: unknown = claims['act'];
  while (out.length < MAX_ACT_DEPTH && act !== null && typeof act === 'object' && !Array.isArray(act)) {
    // RFC 8693 §4.1 names the actor by `sub`; some IdPs only put `client_id` there.
    const rec = act as Record<string, unknown>;
    const sub = typeof rec['sub'] === 'string' ? rec['sub'] : rec['client_id'];
    if (typeof sub !== 'string') break;
    out.push(sub);
    act = (act as Record<string, unknown>)['act'];
  }
  return out;
}
