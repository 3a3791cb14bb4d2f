import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ErrorCode } from '../errors/codes.ts';
import type { Identity } from '../policy/model.ts';

/**
 * Header hygiene on both legs. Inbound: one pass over the raw header list builds the headers
 * the app will see, minus everything a client must not be able to set or that only describes
 * the client's own connection; it also collects the few fields the stages read. Outbound:
 * connection-specific response fields are dropped before relaying (HTTP/2 forbids them).
 */

/**
 * Connection-specific fields, RFC 9110 §7.6.1 and RFC 9113 §8.2.2, plus fields the sidecar
 * consumes itself: `host` (becomes `:authority`), `expect` (answered by the sidecar only after
 * the call is allowed), `proxy-authorization` (a credential for a proxy, never for the app),
 * `http2-settings` (h2c upgrade). `te` is handled apart: only `trailers` survives.
 */
const CONSUMED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'host',
  'expect',
  'proxy-authorization',
  'http2-settings',
]);

/** Response fields never relayed: connection-specific ones (Node's HTTP/2 `respond()` throws on them). */
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

export interface HeaderPolicy {
  /** `<identityHeaders.prefix>`: every inbound field starting with it is dropped (anti-spoofing). */
  readonly prefix: string;
  readonly stripAuthorization: boolean;
}

export interface ScannedHeaders {
  /** Headers for the app. */
  readonly fwd: OutgoingHttpHeaders;
  readonly authorization: string | string[] | undefined;
  readonly host: string | undefined;
  readonly contentType: string | undefined;
  readonly grpcTimeout: string | undefined;
  readonly acceptsTrailers: boolean;
  /** A body follows per HTTP/1.1 framing: chunked, or a non-zero Content-Length. */
  readonly framedBody: boolean;
}

export type ScanResult = ScannedHeaders | { readonly error: ErrorCode; readonly detail: string };

function bad(detail: string): ScanResult {
  return Object.freeze({ error: 'ERR_REQUEST_INVALID' as const, detail });
}
const DUP_HOST = bad('more than one Host field');
const DUP_LENGTH = bad('more than one Content-Length field');
const DUP_TYPE = bad('more than one Content-Type field');
const LENGTH_AND_CHUNKED = bad('both Content-Length and Transfer-Encoding');
const BAD_CODING = bad('Transfer-Encoding other than chunked');
const DUP_CODING = bad('more than one Transfer-Encoding field');
const DUP_TIMEOUT = bad('more than one grpc-timeout field');

/** Case-insensitive search for `token` in a comma-separated list (RFC 9110 §5.6.1). */
export function hasToken(list: string, token: string): boolean {
  const lower = list.toLowerCase();
  let from = 0;
  for (;;) {
    const at = lower.indexOf(token, from);
    if (at === -1) return false;
    const end = at + token.length;
    if (isListEdge(lower, at - 1, -1) && isListEdge(lower, end, 1)) return true;
    from = end;
  }
}

function isListEdge(s: string, i: number, step: number): boolean {
  for (; i >= 0 && i < s.length; i += step) {
    const c = s.charCodeAt(i);
    if (c === 0x2c) return true;
    if (c !== 0x20 && c !== 0x09) return false;
  }
  return true;
}

/**
 * Whether the lower-case field `name` would pass for one of the sidecar's identity headers: it
 * starts with `prefix`, or does once `_` or `.` is read as `-`. CGI-style gateways (WSGI's
 * `environ`, Rack's `env`, PHP's `$_SERVER`) turn both `X-Ward-Subject` and `X_Ward_Subject`
 * into `HTTP_X_WARD_SUBJECT` (Envoy's `headers_with_underscores_action`, Puma CVE-2024-45614),
 * and PHP turns `.` into `_` as well (`X.Ward.Subject`; found in review); the prefix itself has
 * no `_` (config/sidecar.ts). One compare per character of the prefix; nearly every name differs
 * at its first.
 */
export function impersonatesIdentity(name: string, prefix: string): boolean {
  const n = prefix.length;
  if (name.length < n) return false;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    const p = prefix.charCodeAt(i);
    if (c !== p && ((c !== 0x5f && c !== 0x2e) || p !== 0x2d)) return false;
  }
  return true;
}

/**
 * One pass over `[name, value, ...]`. `lowerNames` is false for HTTP/1.1 (names keep the
 * client's case) and true for HTTP/2 (lower-case on the wire, RFC 9113 §8.2).
 */
export function scanRequestHeaders(raw: readonly string[], lowerNames: boolean, p: HeaderPolicy): ScanResult {
  // No prototype: a field named `__proto__` or `constructor` is just a field.
  const fwd: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
  let authorization: string | string[] | undefined;
  let host: string | undefined;
  let contentType: string | undefined;
  let grpcTimeout: string | undefined;
  let connection: string | undefined;
  let transferEncoding: string | undefined;
  let acceptsTrailers = false;
  let hosts = 0;
  let lengths = 0;
  let types = 0;
  let codings = 0;
  let timeouts = 0;
  let contentLength: string | undefined;
  const prefix = p.prefix;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const rawName = raw[i] as string;
    const value = raw[i + 1] as string;
    const name = lowerNames ? rawName : rawName.toLowerCase();
    if (name.charCodeAt(0) === 0x3a) continue; // pseudo-header: the forwarder sets its own
    if (impersonatesIdentity(name, prefix)) continue; // would pass for the sidecar's identity headers
    switch (name) {
      case 'authorization':
        authorization = authorization === undefined ? value : typeof authorization === 'string' ? [authorization, value] : [...authorization, value];
        if (p.stripAuthorization) continue;
        break;
      case 'content-length':
        lengths++;
        contentLength = value;
        break;
      case 'content-type':
        types++;
        contentType = value;
        break;
      case 'grpc-timeout':
        timeouts++;
        grpcTimeout = value;
        break;
      case 'cookie': {
        // HTTP/2 splits cookies into several fields (RFC 9113 §8.2.3); one field suits both legs.
        const prev = fwd.cookie;
        fwd.cookie = prev === undefined ? value : `${prev as string}; ${value}`;
        continue;
      }
      default:
        if (CONSUMED.has(name)) {
          if (name === 'host') {
            hosts++;
            host = value;
          } else if (name === 'te') {
            if (hasToken(value, 'trailers')) acceptsTrailers = true;
          } else if (name === 'connection') {
            connection = connection === undefined ? value : `${connection},${value}`;
          } else if (name === 'transfer-encoding') {
            codings++;
            transferEncoding = value;
          }
          continue;
        }
    }
    const prev = fwd[name];
    if (prev === undefined) fwd[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else fwd[name] = [prev as string, value];
  }
  // Request smuggling and ambiguity (RFC 9112 §6.3): refuse rather than pick one.
  if (hosts > 1) return DUP_HOST;
  if (lengths > 1) return DUP_LENGTH;
  if (types > 1) return DUP_TYPE;
  if (codings > 1) return DUP_CODING;
  // The sidecar would time the call by one and the app by another (found in review: both went
  // through as received, neither rewritten to the time left).
  if (timeouts > 1) return DUP_TIMEOUT;
  if (transferEncoding !== undefined) {
    if (lengths > 0) return LENGTH_AND_CHUNKED;
    // We re-frame the body; a coding other than chunked would reach the app undeclared.
    if (transferEncoding.trim().toLowerCase() !== 'chunked') return BAD_CODING;
  }
  if (connection !== undefined) dropConnectionOptions(fwd, connection);
  const framedBody = transferEncoding !== undefined || (contentLength !== undefined && contentLength.trim() !== '0');
  return { fwd, authorization, host, contentType, grpcTimeout, acceptsTrailers, framedBody };
}

/** RFC 9110 §7.6.1: a field named in `Connection` is meant for this hop only. */
function dropConnectionOptions(h: OutgoingHttpHeaders | IncomingHttpHeaders, connection: string): void {
  for (const part of connection.split(',')) {
    const name = part.trim().toLowerCase();
    if (name !== '' && name !== 'close' && name !== 'keep-alive' && !name.startsWith(':') && Object.hasOwn(h, name)) delete h[name];
  }
}

/**
 * App response fields (or trailers) that may be relayed: pseudo-headers and connection-specific
 * fields removed. Input: an HTTP/2 header object or an HTTP/1.1 `IncomingMessage.headers`.
 */
export function relayableFields(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
  for (const name in headers) {
    if (name.charCodeAt(0) === 0x3a || RESPONSE_HOP_BY_HOP.has(name)) continue;
    out[name] = headers[name];
  }
  const connection = headers.connection;
  if (connection !== undefined) dropConnectionOptions(out, connection);
  return out;
}

/**
 * A caller's request trailers as the app may see them: relayable fields minus credentials and
 * the identity prefix. Trailers are checked by nobody before the app (RFC 9110 §6.5.1: they
 * must not carry authentication or routing), so they must not be a second way in for a field the
 * header scan drops.
 */
export function requestTrailerFields(trailers: IncomingHttpHeaders, identityPrefix: string | undefined): OutgoingHttpHeaders {
  const out = relayableFields(trailers);
  for (const name in out) {
    if (name === 'authorization' || name === 'proxy-authorization' || (identityPrefix !== undefined && impersonatesIdentity(name, identityPrefix))) delete out[name];
  }
  return out;
}

/** Fields only the sidecar writes in a response to its caller (inbound/respond.ts). */
const SIDECAR_RESPONSE_FIELDS = ['x-ward-reason', 'x-ward-decision-id'] as const;

/** Whether `name` (lower-case) is one of the fields only the sidecar writes. */
export function isSidecarResponseField(name: string): boolean {
  return name === SIDECAR_RESPONSE_FIELDS[0] || name === SIDECAR_RESPONSE_FIELDS[1];
}

/** Removes what an app could send to pass for a sidecar denial (a forged `x-ward-reason`). */
export function dropSidecarResponseFields(h: OutgoingHttpHeaders | IncomingHttpHeaders): void {
  for (const name of SIDECAR_RESPONSE_FIELDS) if (name in h) delete h[name];
}

/** HTTP/1.1 app response headers for an HTTP/2 client: `:status` plus the relayable fields. */
export function responseHeadersForH2(status: number, headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
  out[':status'] = status;
  for (const name in headers) {
    if (RESPONSE_HOP_BY_HOP.has(name)) continue;
    out[name] = headers[name];
  }
  const connection = headers.connection;
  if (connection !== undefined) dropConnectionOptions(out, connection);
  return out;
}

/** Names of the identity headers, built once from the configured prefix. */
export interface IdentityHeaderNames {
  readonly subject: string;
  readonly issuer: string;
  readonly claims: string;
  readonly decisionId: string;
}

export function identityHeaderNames(prefix: string): IdentityHeaderNames {
  return Object.freeze({
    subject: `${prefix}subject`,
    issuer: `${prefix}issuer`,
    claims: `${prefix}claims`,
    decisionId: `${prefix}decision-id`,
  });
}

/**
 * Opaque-token identities are cached by the authenticator (same object for the same token), so
 * their claims are serialized once per identity, not once per request.
 */
const serializedClaims = new WeakMap<Identity, string | null>();

/** A field value the app can read back byte-for-byte: visible ASCII and inner spaces only. */
function headerSafe(v: string): boolean {
  const n = v.length;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return n === 0 || (v.charCodeAt(0) !== 0x20 && v.charCodeAt(n - 1) !== 0x20);
}

/**
 * The claims header value (base64url of the verified claims' JSON), or null when `sub`/`iss`
 * cannot be sent verbatim in a header field. We refuse such a call (ERR_TOKEN_CLAIMS) rather
 * than escape the value, because an escaped subject could collide with another subject spelled
 * like the escape. A JWT's claims go as the issuer signed them (its payload segment): nothing
 * to compute or remember, which matters when every call brings a new token.
 */
export function identityClaimsHeader(id: Identity): string | null {
  if (!headerSafe(id.subject) || !headerSafe(id.issuer)) return null;
  if (id.claimsBase64url !== undefined) return id.claimsBase64url;
  let v = serializedClaims.get(id);
  if (v === undefined) {
    try {
      v = Buffer.from(JSON.stringify(id.claims), 'utf8').toString('base64url');
    } catch {
      v = null; // unserializable claims (never from a JSON token): fail closed
    }
    serializedClaims.set(id, v);
  }
  return v;
}

/** Adds the identity headers to the app-bound header object. */
export function addIdentityHeaders(
  h: OutgoingHttpHeaders,
  names: IdentityHeaderNames,
  id: Identity | null,
  claims: string,
  decisionId: string,
): void {
  if (id !== null) {
    h[names.subject] = id.subject;
    h[names.issuer] = id.issuer;
    h[names.claims] = claims;
  }
  h[names.decisionId] = decisionId;
}
