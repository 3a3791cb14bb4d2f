import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { http } from '../lib/node-http.ts';
import { INTERNAL_ERROR } from '../h2/frames.ts';
import type { H2ServerStream } from '../h2/server.ts';
import type { Socket } from 'node:net';
import { ERROR_CODES, type ErrorCode } from '../errors/codes.ts';
import { ERROR_TABLE } from '../errors/table.ts';

/**
 * The one writer of error responses (linkerd `errors/respond.rs`). Everything the caller sees
 * comes from `ERROR_TABLE`: the status, the challenge, the short message. Per-code header sets
 * are built once per service; a response only adds its decision id.
 *
 * - HTTP: status, `WWW-Authenticate: Bearer realm="<service>"[, error="..."]` (RFC 6750 §3),
 *   a short text/plain body, `x-ward-reason`, `x-ward-decision-id`.
 * - gRPC: trailers-only (HTTP 200, `content-type: application/grpc`, `grpc-status`,
 *   `grpc-message` percent-encoded per the gRPC HTTP/2 spec) plus the same two ward headers and
 *   the challenge, which gRPC clients surface as metadata.
 * - After response headers went out (the app failed mid-call): gRPC gets the status in
 *   trailers, other HTTP/2 calls RST_STREAM(INTERNAL_ERROR), HTTP/1.1 loses its connection.
 *
 * A denied call's request body is never read, let alone forwarded: HTTP/2 closes the unread
 * stream with RST_STREAM(NO_ERROR) after the response, HTTP/1.1 (Node) discards it.
 */

export const HEADER_REASON = 'x-ward-reason';
export const HEADER_DECISION_ID = 'x-ward-decision-id';
export const HEADER_WWW_AUTHENTICATE = 'www-authenticate';
const TEXT_PLAIN = 'text/plain; charset=utf-8';
const GRPC_CONTENT_TYPE = 'application/grpc';

/** What the writer needs of a call; `Exchange` implements it. */
export interface ErrorTarget {
  readonly h2: H2ServerStream | null;
  readonly res: ServerResponse | null;
  readonly grpc: boolean;
  readonly decisionId: string;
  /** `HEAD` gets the status and fields without the body (RFC 9110 §9.3.2). */
  readonly method: string;
  closed: boolean;
  finished: boolean;
  responseStarted: boolean;
  trailers: IncomingHttpHeaders | OutgoingHttpHeaders | null;
}

/** `WWW-Authenticate` for a code, or undefined (RFC 6750 §3: realm, then error). */
export function challengeFor(service: string, code: ErrorCode): string | undefined {
  const row = ERROR_TABLE[code];
  if (row.challenge === 'none') return undefined;
  const realm = `Bearer realm="${service}"`;
  return row.challenge === 'bare' ? realm : `${realm}, error="${row.challenge}"`;
}

/**
 * gRPC `grpc-message`: percent-encode every byte outside 0x20-0x7E, and `%` itself, of the
 * UTF-8 encoding (PROTOCOL-HTTP2.md "Responses").
 */
export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = '';
  for (const b of Buffer.from(message, 'utf8')) {
    out += b < 0x20 || b > 0x7e || b === 0x25 ? `%${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  }
  return out;
}

export interface ErrorResponse {
  readonly code: ErrorCode;
  readonly status: number;
  readonly body: Buffer;
  /** HTTP/1.1 headers (no pseudo-headers). */
  readonly h1: Readonly<Record<string, string | number>>;
  /** HTTP/2 plain-HTTP response headers. */
  readonly h2: Readonly<Record<string, string | number>>;
  /** gRPC trailers-only response headers (`:status 200`). */
  readonly grpc: Readonly<Record<string, string | number>>;
  /** gRPC status as trailers, for a failure after response headers went out. */
  readonly grpcTrailers: Readonly<Record<string, string | number>>;
}

/** The precomputed response for one code; pure, so tests read exactly what goes on the wire. */
export function buildErrorResponse(service: string, code: ErrorCode): ErrorResponse {
  const row = ERROR_TABLE[code];
  const challenge = challengeFor(service, code);
  const withChallenge = challenge === undefined ? {} : { [HEADER_WWW_AUTHENTICATE]: challenge };
  const body = Buffer.from(`${row.message}\n`);
  const h1 = { 'content-type': TEXT_PLAIN, 'content-length': body.length, [HEADER_REASON]: code, ...withChallenge };
  const grpcStatus = { 'grpc-status': String(row.grpc), 'grpc-message': encodeGrpcMessage(row.message), [HEADER_REASON]: code };
  return Object.freeze({
    code,
    status: row.http,
    body,
    h1: Object.freeze(h1),
    h2: Object.freeze({ ':status': row.http, ...h1 }),
    grpc: Object.freeze({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE, ...grpcStatus, ...withChallenge }),
    grpcTrailers: Object.freeze(grpcStatus),
  });
}

const END_STREAM = Object.freeze({ endStream: true });
/** HTTP/1.1 refusals after which the connection is not reused (see `write`). */
const CLOSE_AFTER: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_REQUEST_INVALID', 'ERR_PATH_INVALID', 'ERR_PATH_AMBIGUOUS']);

/** The end of a raw HTTP/1.1 refusal's head, after its decision id. */
const RAW_H1_END = '\r\nconnection: close\r\n\r\n';

export class ErrorResponder {
  readonly #byCode: Map<ErrorCode, ErrorResponse>;
  /** Per code: a raw HTTP/1.1 refusal's status line and fields up to the decision id's value. */
  readonly #rawH1: Map<ErrorCode, string>;

  constructor(service: string) {
    this.#byCode = new Map(ERROR_CODES.map((c) => [c, buildErrorResponse(service, c)]));
    this.#rawH1 = new Map(
      ERROR_CODES.map((c) => {
        const r = this.#byCode.get(c) as ErrorResponse;
        const head = Object.entries(r.h1).map(([k, v]) => `${k}: ${v}\r\n`).join('');
        return [c, `HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status] ?? 'Error'}\r\n${head}${HEADER_DECISION_ID}: `];
      }),
    );
  }

  response(code: ErrorCode): ErrorResponse {
    return this.#byCode.get(code) as ErrorResponse;
  }

  /**
   * Writes the error response for `code` to the call, once. Never throws: a peer that already
   * went away just loses the response.
   */
  write(t: ErrorTarget, code: ErrorCode): void {
    if (t.finished || t.closed) return;
    t.finished = true;
    const r = this.#byCode.get(code) as ErrorResponse;
    try {
      const s = t.h2;
      if (s !== null) {
        if (s.destroyed) return;
        if (!t.responseStarted && !s.headersSent) {
          t.responseStarted = true;
          if (t.grpc) {
            s.respond({ ...r.grpc, [HEADER_DECISION_ID]: t.decisionId }, END_STREAM);
          } else if (t.method === 'HEAD') {
            // Node drops a HEAD response's body for HTTP/1.1; ward's HTTP/2 server sends what it
            // is given, and a DATA frame on a HEAD stream is malformed (RFC 9113 §8.1.1).
            s.respond({ ...r.h2, [HEADER_DECISION_ID]: t.decisionId }, END_STREAM);
          } else {
            s.respond({ ...r.h2, [HEADER_DECISION_ID]: t.decisionId });
            s.end(r.body);
          }
          // A request body still arriving is never read: once the response is complete Node
          // closes an unread stream with RST_STREAM(NO_ERROR), which tells the client to stop
          // sending (RFC 9113 §8.1). Reading it here would only waste the bandwidth.
          return;
        }
        if (t.grpc && !s.writableEnded) {
          // Headers went out with waitForTrailers: end the data and let `wantTrailers` carry
          // the status (RFC 9113 trailers; grpc-status in trailers is the normal path).
          t.trailers = { ...r.grpcTrailers, [HEADER_DECISION_ID]: t.decisionId };
          s.end();
          return;
        }
        s.close(INTERNAL_ERROR);
        return;
      }
      const res = t.res;
      if (res === null) return;
      if (!t.responseStarted && !res.headersSent) {
        t.responseStarted = true;
        // A malformed request (ambiguous framing, no or two Hosts, a bad target) leaves the
        // rest of the byte stream untrustworthy: answer, then close (RFC 9112 §6.3 item 4).
        if (CLOSE_AFTER.has(code)) res.shouldKeepAlive = false;
        res.writeHead(r.status, { ...r.h1, [HEADER_DECISION_ID]: t.decisionId });
        res.end(r.body);
        return;
      }
      // A truncated HTTP/1.1 body cannot be signalled any other way.
      res.destroy();
    } catch {
      t.h2?.destroy();
      t.res?.destroy();
    }
  }

  /**
   * HTTP/1.1 bytes refused before any request existed (llhttp `clientError`, a cleartext
   * connection under `tls.mode: strict`): a raw response carrying the reason and `decisionId`,
   * then the connection closes. Not the hot path: the head is joined per refusal.
   */
  writeClientError(socket: Socket, code: ErrorCode, decisionId: string): void {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const r = this.#byCode.get(code) as ErrorResponse;
    socket.end(Buffer.concat([Buffer.from(`${this.#rawH1.get(code) as string}${decisionId}${RAW_H1_END}`, 'latin1'), r.body]));
  }
}
