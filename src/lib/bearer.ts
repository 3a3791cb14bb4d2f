/**
 * Whether a token an IdP issued can go out as `Authorization: Bearer <token>`: RFC 6750 §2.1's
 * `b64token`, and not longer than any IdP means a per-call credential to be. The IdP is not
 * trusted to be well-formed (SECURITY.md): a token with a CR LF or a space would fail at the
 * header on every call that used it, for as long as it stayed cached.
 */
export const MAX_ISSUED_TOKEN_CHARS = 16_384;

const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export function isSendableBearer(token: string): boolean {
  return token.length <= MAX_ISSUED_TOKEN_CHARS && B64TOKEN.test(token);
}
