/**
 * Stable reason codes. Every denial, every error response and every decision record carries
 * one of these; tests and dashboards match on them, never on message text. Adding a code means
 * adding its row to `table.ts` (the compiler enforces it).
 */
export type ErrorCode =
  // request shape (checked before any token work)
  | 'ERR_REQUEST_INVALID'
  | 'ERR_REQUEST_HEADERS_TOO_LARGE'
  | 'ERR_PATH_INVALID'
  | 'ERR_PATH_AMBIGUOUS'
  // transport: a sidecar whose inbound.tls.mode is strict takes calls over TLS only
  | 'ERR_TLS_REQUIRED'
  // credentials: RFC 6750 extraction
  | 'ERR_TOKEN_MISSING'
  | 'ERR_TOKEN_MULTIPLE'
  | 'ERR_TOKEN_IN_QUERY'
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_TOKEN_TOO_LARGE'
  // credentials: verification (cheapest checks first, see authn/)
  | 'ERR_TOKEN_ALG_NOT_ALLOWED'
  | 'ERR_TOKEN_TYPE'
  | 'ERR_TOKEN_ISSUER_UNKNOWN'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_TOKEN_AUDIENCE'
  | 'ERR_TOKEN_CLAIMS'
  | 'ERR_TOKEN_KEY_UNKNOWN'
  | 'ERR_TOKEN_SIGNATURE'
  | 'ERR_TOKEN_INACTIVE'
  | 'ERR_KEYS_UNAVAILABLE'
  | 'ERR_INTROSPECTION_UNAVAILABLE'
  // authorization
  | 'ERR_POLICY_DENIED'
  | 'ERR_POLICY_NO_MATCH'
  | 'ERR_SCOPE_INSUFFICIENT'
  | 'ERR_POLICY_UNAVAILABLE'
  // the caller's own deadline (`grpc-timeout`) passed while the call was still being decided
  | 'ERR_DEADLINE_EXCEEDED'
  // the local app
  | 'ERR_UPSTREAM_UNAVAILABLE'
  | 'ERR_UPSTREAM_TIMEOUT'
  | 'ERR_UPSTREAM_RESET'
  | 'ERR_UPSTREAM_OVERLOADED'
  // outbound (egress): the app's calls to other services
  | 'ERR_DESTINATION_UNKNOWN'
  | 'ERR_EXCHANGE_REFUSED'
  | 'ERR_EXCHANGE_UNAVAILABLE'
  // browser sign-in and sessions (src/session)
  | 'ERR_SESSION_INVALID'
  | 'ERR_SESSION_CSRF'
  | 'ERR_SIGNIN_FAILED'
  | 'ERR_SIGNIN_UNAVAILABLE'
  | 'ERR_RETURN_URL_INVALID'
  | 'ERR_INTERNAL';

export const ERROR_CODES: readonly ErrorCode[] = [
  'ERR_REQUEST_INVALID',
  'ERR_REQUEST_HEADERS_TOO_LARGE',
  'ERR_PATH_INVALID',
  'ERR_PATH_AMBIGUOUS',
  'ERR_TLS_REQUIRED',
  'ERR_TOKEN_MISSING',
  'ERR_TOKEN_MULTIPLE',
  'ERR_TOKEN_IN_QUERY',
  'ERR_TOKEN_MALFORMED',
  'ERR_TOKEN_TOO_LARGE',
  'ERR_TOKEN_ALG_NOT_ALLOWED',
  'ERR_TOKEN_TYPE',
  'ERR_TOKEN_ISSUER_UNKNOWN',
  'ERR_TOKEN_EXPIRED',
  'ERR_TOKEN_NOT_YET_VALID',
  'ERR_TOKEN_AUDIENCE',
  'ERR_TOKEN_CLAIMS',
  'ERR_TOKEN_KEY_UNKNOWN',
  'ERR_TOKEN_SIGNATURE',
  'ERR_TOKEN_INACTIVE',
  'ERR_KEYS_UNAVAILABLE',
  'ERR_INTROSPECTION_UNAVAILABLE',
  'ERR_POLICY_DENIED',
  'ERR_POLICY_NO_MATCH',
  'ERR_SCOPE_INSUFFICIENT',
  'ERR_POLICY_UNAVAILABLE',
  'ERR_DEADLINE_EXCEEDED',
  'ERR_UPSTREAM_UNAVAILABLE',
  'ERR_UPSTREAM_TIMEOUT',
  'ERR_UPSTREAM_RESET',
  'ERR_UPSTREAM_OVERLOADED',
  'ERR_DESTINATION_UNKNOWN',
  'ERR_EXCHANGE_REFUSED',
  'ERR_EXCHANGE_UNAVAILABLE',
  'ERR_SESSION_INVALID',
  'ERR_SESSION_CSRF',
  'ERR_SIGNIN_FAILED',
  'ERR_SIGNIN_UNAVAILABLE',
  'ERR_RETURN_URL_INVALID',
  'ERR_INTERNAL',
];
