import type { ErrorCode } from './codes.ts';

/** gRPC status codes used by the sidecar (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/** RFC 6750 §3.1 error codes carried in `WWW-Authenticate`. */
export type BearerError = 'invalid_request' | 'invalid_token' | 'insufficient_scope';

export interface ErrorRow {
  readonly http: number;
  readonly grpc: GrpcStatusCode;
  /** When set, the response carries `WWW-Authenticate: Bearer realm=...[, error=...]`. */
  readonly challenge: 'none' | 'bare' | BearerError;
  /** Short, caller-safe text: becomes the body / `grpc-message`. Detail goes to the log only. */
  readonly message: string;
}

/**
 * The one table from reason code to what the caller sees. `inbound/respond.ts` is the only
 * writer of error responses and reads nothing else.
 *
 * Choices worth stating:
 * - A missing token is 401 with a bare challenge (RFC 6750 §3.1: no error code when the request
 *   lacked credentials), unlike Istio's 403 "RBAC: access denied".
 * - An audience mismatch is 401 invalid_token: the token is not one issued for this service.
 * - JWKS or introspection unreachable is 503/UNAVAILABLE (fail closed, but tell clients it is
 *   transient so they retry instead of re-authenticating).
 * - Outbound: an undeclared destination is 403/PERMISSION_DENIED, not 502: it is the egress
 *   policy saying no, and retrying cannot help. An IdP that refuses a token exchange is
 *   403/PERMISSION_DENIED too (the OAuth error code goes to the decision and the log); an IdP
 *   that cannot be reached is 503/UNAVAILABLE.
 * - A caller's deadline that passes before its call is decided (a slow JWKS fetch, a token
 *   exchange) is `ERR_DEADLINE_EXCEEDED`, not `ERR_UPSTREAM_TIMEOUT`: the app (or destination)
 *   was never called. 504 / DEADLINE_EXCEEDED, as gRPC maps that status to HTTP.
 * - Browser sessions: a session cookie that does not unseal, has expired or was logged out is
 *   401 with a bare challenge, like a missing token (a browser on a sign-in route is sent to sign
 *   in instead); a sign-in callback that fails (forged `state`, replayed code, bad ID token) is
 *   400: the request cannot succeed as sent.
 */
export const ERROR_TABLE: { readonly [C in ErrorCode]: ErrorRow } = {
  ERR_REQUEST_INVALID: { http: 400, grpc: GrpcStatus.INTERNAL, challenge: 'none', message: 'malformed request' },
  ERR_REQUEST_HEADERS_TOO_LARGE: { http: 431, grpc: GrpcStatus.RESOURCE_EXHAUSTED, challenge: 'none', message: 'request header fields too large' },
  ERR_PATH_INVALID: { http: 400, grpc: GrpcStatus.INTERNAL, challenge: 'none', message: 'invalid request path' },
  ERR_PATH_AMBIGUOUS: { http: 400, grpc: GrpcStatus.INTERNAL, challenge: 'none', message: 'ambiguous encoding in request path' },
  ERR_TLS_REQUIRED: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'this service takes calls over TLS only' },
  ERR_TOKEN_MISSING: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'bare', message: 'bearer token required' },
  ERR_TOKEN_MULTIPLE: { http: 400, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_request', message: 'more than one credential' },
  ERR_TOKEN_IN_QUERY: { http: 400, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_request', message: 'tokens are not accepted in the URL' },
  ERR_TOKEN_MALFORMED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'malformed token' },
  ERR_TOKEN_TOO_LARGE: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token too large' },
  ERR_TOKEN_ALG_NOT_ALLOWED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token algorithm not allowed' },
  ERR_TOKEN_TYPE: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'not an access token' },
  ERR_TOKEN_ISSUER_UNKNOWN: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token issuer not trusted' },
  ERR_TOKEN_EXPIRED: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token expired' },
  ERR_TOKEN_NOT_YET_VALID: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token not yet valid' },
  ERR_TOKEN_AUDIENCE: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token audience not accepted' },
  ERR_TOKEN_CLAIMS: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token claims invalid' },
  ERR_TOKEN_KEY_UNKNOWN: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token signing key unknown' },
  ERR_TOKEN_SIGNATURE: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token signature invalid' },
  ERR_TOKEN_INACTIVE: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'invalid_token', message: 'token not active' },
  ERR_KEYS_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'token keys unavailable' },
  ERR_INTROSPECTION_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'token introspection unavailable' },
  ERR_POLICY_DENIED: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'denied by policy' },
  ERR_POLICY_NO_MATCH: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'no policy rule allows this call' },
  ERR_SCOPE_INSUFFICIENT: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'insufficient_scope', message: 'insufficient scope' },
  ERR_POLICY_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'no policy loaded' },
  ERR_DEADLINE_EXCEEDED: { http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED, challenge: 'none', message: 'deadline exceeded before the call was decided' },
  ERR_UPSTREAM_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'upstream unavailable' },
  ERR_UPSTREAM_TIMEOUT: { http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED, challenge: 'none', message: 'upstream timed out' },
  ERR_UPSTREAM_RESET: { http: 502, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'upstream reset the stream' },
  ERR_UPSTREAM_OVERLOADED: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'upstream overloaded' },
  ERR_DESTINATION_UNKNOWN: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'destination not declared' },
  ERR_EXCHANGE_REFUSED: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'token exchange refused' },
  ERR_EXCHANGE_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'token exchange unavailable' },
  ERR_SESSION_INVALID: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'bare', message: 'session invalid or expired' },
  ERR_SESSION_CSRF: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, challenge: 'none', message: 'cross-site request refused' },
  ERR_SIGNIN_FAILED: { http: 400, grpc: GrpcStatus.UNAUTHENTICATED, challenge: 'none', message: 'sign-in failed' },
  ERR_SIGNIN_UNAVAILABLE: { http: 503, grpc: GrpcStatus.UNAVAILABLE, challenge: 'none', message: 'sign-in provider unavailable' },
  ERR_RETURN_URL_INVALID: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, challenge: 'none', message: 'return URL refused' },
  ERR_INTERNAL: { http: 500, grpc: GrpcStatus.INTERNAL, challenge: 'none', message: 'internal error' },
};
