import type { Identity } from './model.ts';

/**
 * Builds the `Identity` policy sees from a claim set (JWT payload or RFC 7662 introspection
 * response), with the conventions of authn/claims.ts `identityParts` so `ward policy explain`
 * sees what the sidecar sees: subject = `sub`, else `client_id`; scopes from `scope`, else
 * `scp`; actors from the RFC 8693 §4.1 `act` chain, most recent first. Unlike authn it never
 * refuses: a malformed part is left out (authn would reject such a token before policy runs).
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
  const scp = claims['scp'];
  // Same precedence as authn/claims.ts: `scope` (RFC 9068 §2.2.3, a space-delimited string) when
  // present, else `scp` (a list in most IdPs, a string in Entra ID).
  if (scope !== undefined) {
    if (typeof scope === 'string') addWords(out, scope);
  } else if (typeof scp === 'string') {
    addWords(out, scp);
  } else if (Array.isArray(scp)) {
    for (const s of scp) if (typeof s === 'string' && s !== '') out.add(s);
  }
  return out;
}

function addWords(into: Set<string>, s: string): void {
  for (const w of s.split(' ')) if (w !== '') into.add(w);
}

/** `act.sub`, `act.act.sub`, ...: the immediate actor first. A link without a string `sub` ends the chain. */
export function actorsOf(claims: Readonly<Record<string, unknown>>): string[] {
  const out: string[] = [];
  let act: unknown = claims['act'];
  while (out.length < MAX_ACT_DEPTH && act !== null && typeof act === 'object' && !Array.isArray(act)) {
    const sub = (act as Record<string, unknown>)['sub'];
    if (typeof sub !== 'string' || sub === '') break;
    out.push(sub);
    act = (act as Record<string, unknown>)['act'];
  }
  return out;
}
