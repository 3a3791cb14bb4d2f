import type { ErrorCode } from '../errors/codes.ts';
import type { JsonObject, JsonValue } from './json.ts';

/**
 * Claim checks shared by JWT access tokens and RFC 7662 introspection responses. Each returns
 * `undefined` when the check passes, or a `Failure` (stable code + log-only detail).
 */
export interface Failure {
  readonly code: ErrorCode;
  readonly detail: string;
}

function failure(code: ErrorCode, detail: string): Failure {
  return { code, detail };
}

/** RFC 8693 §4.1 delegation chains are short; a deep one is a parser-exhaustion attempt. */
export const MAX_ACTOR_DEPTH = 8;

/**
 * A token bound to a key its presenter must prove it holds (`cnf`: RFC 7800; DPoP RFC 9449 §6,
 * mutual-TLS RFC 8705 §3). ward takes bearer tokens only and checks no proof of possession, so
 * accepting one would turn it back into a bearer token: whoever stole it could use it. Refused,
 * in JWTs and in introspection answers alike.
 */
export function checkNotSenderConstrained(claims: JsonObject): Failure | undefined {
  return claims['cnf'] === undefined ? undefined : failure('ERR_TOKEN_TYPE', 'sender-constrained token (cnf): no proof of possession is checked here');
}

/**
 * What an RFC 7662 answer says the token is, where it says it: `token_type` (§2.2: RFC 6749
 * §7.1's type; a bearer token is `Bearer`, any other type needs a proof ward does not check) and
 * `token_use` (ORY Hydra: `access_token`, `refresh_token`). An introspection endpoint also
 * answers for refresh tokens, which are credentials for the token endpoint alone (RFC 6749 §1.5).
 */
export function checkIntrospectedType(resp: JsonObject): Failure | undefined {
  const type = resp['token_type'];
  if (type !== undefined && (typeof type !== 'string' || type.toLowerCase() !== 'bearer')) {
    return failure('ERR_TOKEN_TYPE', `introspection token_type ${JSON.stringify(type).slice(0, 40)}`);
  }
  const use = resp['token_use'];
  if (use !== undefined && use !== 'access_token') return failure('ERR_TOKEN_TYPE', `introspection token_use ${JSON.stringify(use).slice(0, 40)}`);
  return undefined;
}

/**
 * `exp`/`nbf`/`iat` (RFC 7519 §4.1.4-6) against `nowMs` with `skewSeconds` of tolerance either
 * way. `exp` is required for JWTs (RFC 9068 §2.2) but optional in introspection responses
 * (RFC 7662 §2.2), where the IdP's `active: true` is itself the statement of validity.
 * An `iat` in the future beyond the skew means the issuer's clock or the token is wrong; it is
 * reported as not yet valid, as with `nbf`.
 */
export function checkTime(claims: JsonObject, nowMs: number, skewSeconds: number, requireExp: boolean): Failure | undefined {
  const now = nowMs / 1000;
  const exp = claims['exp'];
  if (exp === undefined) {
    if (requireExp) return failure('ERR_TOKEN_CLAIMS', 'exp missing');
  } else {
    if (typeof exp !== 'number') return failure('ERR_TOKEN_CLAIMS', 'exp is not a number');
    if (exp + skewSeconds <= now) return failure('ERR_TOKEN_EXPIRED', `expired at ${exp}`);
  }
  const nbf = claims['nbf'];
  if (nbf !== undefined) {
    if (typeof nbf !== 'number') return failure('ERR_TOKEN_CLAIMS', 'nbf is not a number');
    if (nbf - skewSeconds > now) return failure('ERR_TOKEN_NOT_YET_VALID', `nbf ${nbf} is in the future`);
  }
  const iat = claims['iat'];
  if (iat !== undefined) {
    if (typeof iat !== 'number') return failure('ERR_TOKEN_CLAIMS', 'iat is not a number');
    if (iat - skewSeconds > now) return failure('ERR_TOKEN_NOT_YET_VALID', `iat ${iat} is in the future`);
  }
  return undefined;
}

/**
 * RFC 7519 §4.1.3 / RFC 9068 §4: `aud` (a string or an array of strings) must name one of the
 * audiences this service accepts. An issuer configured with no audiences accepts none: in a
 * zero-trust sidecar "audience not checked" must be spelled out, not fallen into.
 */
export function checkAudience(aud: JsonValue | undefined, accepted: readonly string[]): Failure | undefined {
  if (typeof aud === 'string') {
    if (accepted.includes(aud)) return undefined;
  } else if (Array.isArray(aud)) {
    for (const a of aud as readonly JsonValue[]) if (typeof a === 'string' && accepted.includes(a)) return undefined;
  } else if (aud === undefined) {
    return failure('ERR_TOKEN_AUDIENCE', 'aud missing');
  }
  return failure('ERR_TOKEN_AUDIENCE', 'no accepted audience in aud');
}

export function checkRequired(claims: JsonObject, names: readonly string[]): Failure | undefined {
  for (const name of names) {
    const v = claims[name];
    if (v === undefined || v === null) return failure('ERR_TOKEN_CLAIMS', `required claim ${name} missing`);
  }
  return undefined;
}

export interface IdentityParts {
  readonly subject: string;
  readonly actors: readonly string[];
  readonly scopes: ReadonlySet<string>;
}

/** Subject, RFC 8693 actor chain and scopes: shape checks that belong before the signature. */
export function identityParts(claims: JsonObject): IdentityParts | Failure {
  const sub = claims['sub'];
  const clientId = claims['client_id'];
  let subject: string;
  if (sub !== undefined) {
    if (typeof sub !== 'string' || sub === '') return failure('ERR_TOKEN_CLAIMS', 'sub is not a non-empty string');
    subject = sub;
  } else if (typeof clientId === 'string' && clientId !== '') {
    subject = clientId; // client-credentials tokens without `sub` (RFC 9068 §2.2 note)
  } else {
    return failure('ERR_TOKEN_CLAIMS', 'neither sub nor client_id');
  }

  let act = claims['act'];
  if (act === undefined) return withScopes(subject, NO_ACTORS, claims);
  const actors: string[] = [];
  while (act !== undefined) {
    if (actors.length === MAX_ACTOR_DEPTH) return failure('ERR_TOKEN_CLAIMS', `act chain deeper than ${MAX_ACTOR_DEPTH}`);
    if (typeof act !== 'object' || act === null || Array.isArray(act)) return failure('ERR_TOKEN_CLAIMS', 'act is not an object');
    const o = act as JsonObject;
    const actor = o['sub'];
    if (typeof actor !== 'string' || actor === '') return failure('ERR_TOKEN_CLAIMS', 'act without sub');
    actors.push(actor);
    act = o['act'];
  }

  return withScopes(subject, Object.freeze(actors), claims);
}

const NO_ACTORS: readonly string[] = Object.freeze([]);

function withScopes(subject: string, actors: readonly string[], claims: JsonObject): IdentityParts | Failure {
  const scope = claims['scope'];
  if (scope !== undefined) {
    // RFC 8693 §4.2 / RFC 9068 §2.2.3: a space-delimited string.
    if (typeof scope !== 'string') return failure('ERR_TOKEN_CLAIMS', 'scope is not a string');
    return { subject, actors, scopes: scopeSet(scope) };
  }
  const scopes = new Set<string>();
  const scp = claims['scp'];
  if (scp !== undefined) {
    // `scp`: an array in most IdPs, a space-delimited string in Entra ID.
    if (typeof scp === 'string') addSpaceDelimited(scopes, scp);
    else if (Array.isArray(scp)) {
      for (const s of scp as readonly JsonValue[]) {
        if (typeof s !== 'string') return failure('ERR_TOKEN_CLAIMS', 'scp holds a non-string');
        if (s !== '') scopes.add(s);
      }
    } else return failure('ERR_TOKEN_CLAIMS', 'scp is neither a string nor an array');
  }
  return { subject, actors, scopes };
}

/**
 * The last `scope` string split and the set it gave. A client's tokens carry the same scopes one
 * after another, so a token not seen before usually reuses the set of the last one. Identities
 * only ever read their scopes (`ReadonlySet`), and share them already through the cache.
 */
let lastScope = '';
let lastScopes: ReadonlySet<string> = new Set();

function scopeSet(scope: string): ReadonlySet<string> {
  if (scope === lastScope) return lastScopes;
  const scopes = new Set<string>();
  addSpaceDelimited(scopes, scope);
  lastScope = scope;
  lastScopes = scopes;
  return scopes;
}

function addSpaceDelimited(into: Set<string>, s: string): void {
  for (const part of s.split(' ')) if (part !== '') into.add(part);
}

export function isFailure(v: object): v is Failure {
  return 'code' in v;
}
