import type { ErrorCode } from '../errors/codes.ts';

/**
 * Domain types shared by the request path. `policy/compile.ts` turns a parsed policy file into a
 * `CompiledPolicy`; `policy/evaluate.ts` decides over `Facts`; `authn/` produces the `Identity`
 * the facts carry. Everything here is immutable once built.
 */

/** What authentication proved about the caller. Built once per verified token and cached. */
export interface Identity {
  readonly issuer: string;
  /** `sub`, or `client_id` for client-credentials tokens that lack `sub`. */
  readonly subject: string;
  /** The verified claim set (JWT payload or RFC 7662 introspection response). */
  readonly claims: Readonly<Record<string, unknown>>;
  readonly tokenKind: 'jwt' | 'opaque';
  /** Seconds since the epoch (`exp`); caches never keep an identity past this. */
  readonly expiresAt: number;
  /** The RFC 8693 `act` chain, most recent actor first (`act.sub`, `act.act.sub`, ...). */
  readonly actors: readonly string[];
  /** Space-delimited `scope` (or `scp` array) as a set. */
  readonly scopes: ReadonlySet<string>;
  /**
   * For a JWT: its payload segment, i.e. base64url of `claims` as JSON exactly as the issuer
   * signed it (canonical base64url, strict JSON: checked when parsed). The identity headers send
   * it as is rather than serializing `claims` again. Absent for opaque tokens.
   */
  readonly claimsBase64url?: string;
}

/** The request as policy sees it: after normalization, before forwarding. */
export interface RequestFacts {
  readonly protocol: 'grpc' | 'http';
  /** Upper-case HTTP method (`POST` for every gRPC call). */
  readonly method: string;
  /** Normalized path without query: the exact path that will be forwarded. */
  readonly path: string;
  /** `/package.Service/Method` when `protocol === 'grpc'`. */
  readonly grpcMethod: string | undefined;
}

export interface Facts {
  /** `null` when the call carried no token (a presented-but-invalid token never gets here). */
  readonly identity: Identity | null;
  readonly request: RequestFacts;
}

/** Issuer trust as declared in the policy file; `authn/` builds verifiers from these. */
export interface IssuerTrust {
  readonly issuer: string;
  readonly audiences: readonly string[];
  /** Explicit JWKS URI; when absent it comes from OIDC discovery. */
  readonly jwksUri: string | undefined;
  readonly discovery: boolean;
  readonly algorithms: readonly string[];
  /** RFC 9068: require `typ: at+jwt` (default true). */
  readonly requireAtJwtType: boolean;
  /** Shared-secret HMAC verification; only when configured (never implied by a token's `alg`). */
  readonly hmacSecret: Uint8Array | undefined;
  /** Opaque tokens (not JWTs) are checked through RFC 7662 introspection at this issuer. */
  readonly introspection: boolean;
  /** An introspection answer must carry `aud` (default, and when absent: true; fail closed). */
  readonly requireIntrospectedAudience?: boolean;
  /** Claims that must be present in addition to iss/exp/aud. */
  readonly requiredClaims: readonly string[];
}

export interface DryRunDenial {
  readonly code: ErrorCode;
  readonly rule: string | null;
  readonly reason: string;
}

export interface AllowDecision {
  readonly kind: 'allow';
  readonly rule: string;
  readonly reason: string;
  readonly policyVersion: string;
  /** Set when a dry-run rule or a dry-run policy would have denied this call. */
  readonly dryRunDenial: DryRunDenial | undefined;
}

export interface DenyDecision {
  readonly kind: 'deny';
  readonly code: ErrorCode;
  /** The deny rule that matched, or the closest allow rule that failed; null when none applied. */
  readonly rule: string | null;
  /** One line for logs and `ward policy explain` (never a token). */
  readonly reason: string;
  readonly policyVersion: string;
}

export type Decision = AllowDecision | DenyDecision;

declare const permitBrand: unique symbol;
/**
 * Proof that policy allowed this call. Only `evaluate()` creates one, and the forwarder only
 * accepts one, so "forwarded without a decision" does not type-check (linkerd `Permitted<T>`).
 */
export interface Permit {
  readonly [permitBrand]: true;
  readonly decision: AllowDecision;
  readonly identity: Identity | null;
}

export type Verdict =
  | { readonly decision: AllowDecision; readonly permit: Permit }
  | { readonly decision: DenyDecision; readonly permit: null };

/**
 * A policy file after validation and compilation: immutable, ready for `evaluate()`.
 * `policy/compile.ts` owns the shape of `rules`; other stages read only the fields below.
 */
export interface CompiledPolicy {
  readonly service: string;
  /** Content hash of the canonical policy: equal files give equal versions on every replica. */
  readonly version: string;
  /** Where it came from (file path), for messages. */
  readonly source: string;
  readonly issuers: readonly IssuerTrust[];
  /** File-wide dry-run: denials are recorded, not enforced. */
  readonly dryRun: boolean;
  readonly rules: readonly unknown[];
}
