import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { H2ClientStream } from '../h2/conn.ts';
import type { H2ServerStream } from '../h2/server.ts';
import type { Identity } from '../policy/model.ts';
import type { RequestSlots } from './slots.ts';
import type { CallSpan } from './types.ts';

/**
 * One inbound call, whatever its protocol: what the stages learned about it and where its
 * response goes. Exactly one of `h2` or `req`/`res` is set. Stream event handlers are
 * module-level functions that find their exchange through the `kExchange` property, so the
 * request path allocates this object and no closures (undici's symbol-keyed state, STYLE.md
 * habit 10).
 */

export const kExchange: unique symbol = Symbol('ward.exchange');

/** A Node stream or message carrying a back-pointer to its exchange. */
export type Tagged<T> = T & { [kExchange]?: Exchange };

export function exchangeOf(o: object): Exchange {
  return (o as Tagged<object>)[kExchange] as Exchange;
}

export function tag(o: object, ex: Exchange): void {
  (o as Tagged<object>)[kExchange] = ex;
}

/** What the forwarder needs of a request body: node's `Readable` and `H2ServerStream` both have it. */
export interface BodySource extends EventEmitter {
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  unpipe(): unknown;
  readonly readableEnded: boolean;
  readonly destroyed: boolean;
}

/** See `Exchange.upgrade`. */
export interface WebSocketUpgrade {
  readonly socket: Duplex;
  readonly head: Buffer;
}

export class Exchange {
  readonly h2: H2ServerStream | null;
  readonly req: IncomingMessage | null;
  readonly res: ServerResponse | null;
  /** Response shape: gRPC (trailers-only errors, grpc-status) or plain HTTP. */
  readonly grpc: boolean;
  readonly decisionId: string;

  // --- raw inputs, as the listener saw them
  readonly method: string;
  /** `:path` or the HTTP/1.1 request-target; undefined for an h2 request without `:path`. */
  readonly target: string | undefined;
  /** `:authority` (h2) or the Host header (h1). */
  authority: string | undefined;
  /** Flat [name, value, ...] list as received (HTTP/2 names are lower-case already). */
  rawHeaders: readonly string[];
  /** The request carries no body (h2 END_STREAM on HEADERS; h1 no length and no chunking). */
  bodyless: boolean;
  /** HTTP/1.1 `Expect: 100-continue`: the 100 goes out only once the call is allowed. */
  readonly expectContinue: boolean;
  /**
   * A WebSocket handshake (HTTP/1.1 `Upgrade: websocket`): the caller's socket, detached from the
   * HTTP parser, and the bytes that came after the request's head. Null for every other call.
   */
  upgrade: WebSocketUpgrade | null = null;

  // --- learned by the stages
  path = '';
  query = '';
  grpcMethod: string | undefined = undefined;
  grpcTimeoutMs = -1;
  /** When the call's deadline expires (`performance.now()` clock); 0: no deadline armed. */
  deadlineAt = 0;
  /** Headers for the app: inbound ones minus stripped names; pseudo-headers added by forward. */
  fwdHeaders: OutgoingHttpHeaders = {};
  /** Every `Authorization` value (an array when repeated: that is an error, not a choice). */
  authorization: string | string[] | undefined = undefined;
  /** The client sent `TE: trailers`. */
  acceptsTrailers = false;
  identity: Identity | null = null;
  /** Arrival time on the tracer's clock (0 when no tracer is configured). */
  traceStart = 0;
  /** The call's span, ended when the downstream side closes (null when not traced). */
  span: CallSpan | null = null;

  // --- lifecycle
  /** The downstream stream/response is closed: nothing more can be written. */
  closed = false;
  /** Response headers went out downstream. */
  responseStarted = false;
  /**
   * The app's `:status` and `grpc-status` header as relayed to an HTTP/2 caller (0 / undefined
   * otherwise): the span reads them here, since headers sent as raw fields have no object form.
   */
  relayedStatus = 0;
  relayedGrpcStatus: string | undefined = undefined;
  /** A ward error response (or reset) was written: nothing else may be. */
  finished = false;
  /**
   * The stack decided the call (allowed or refused, and recorded): from here a deadline that
   * passes is the app's to answer for, before it the call's own (`ERR_DEADLINE_EXCEEDED`).
   */
  decided = false;
  upstream: H2ClientStream | ClientRequest | null = null;
  upstreamRes: IncomingMessage | null = null;
  /** The upstream leg completed, failed or was cancelled by us. */
  upstreamDone = false;
  upstreamError: Error | undefined = undefined;
  /**
   * The request body chunks sent to the app so far, kept until the app answers so the call can
   * be sent again on another connection if the app refuses the stream unprocessed (GOAWAY,
   * REFUSED_STREAM); null once the app answered or the body outgrew the replay limit.
   */
  replay: Buffer[] | null = null;
  replayBytes = 0;
  /** The body can no longer be replayed (too large, or the app answered). */
  replayOff = false;
  /** Response body bytes from an HTTP/2 app held by the caller's stream (not yet acknowledged to the app). */
  downUnacked = 0;
  /** Upstream attempts made (a refused stream is retried once on a fresh connection). */
  attempts = 0;
  /** Trailers the client sent after its body (HTTP/2), relayed to an HTTP/2 app. */
  requestTrailers: IncomingHttpHeaders | null = null;
  /** Trailers to send downstream on `wantTrailers` (the app's, or a gRPC error status). */
  trailers: IncomingHttpHeaders | OutgoingHttpHeaders | null = null;
  timer: NodeJS.Timeout | null = null;
  /** The app-bound call count this call holds a place in (`upstream.maxRequests`), given back by `release`. */
  slots: RequestSlots | null = null;

  constructor(init: {
    h2: H2ServerStream | null;
    req: IncomingMessage | null;
    res: ServerResponse | null;
    grpc: boolean;
    decisionId: string;
    method: string;
    target: string | undefined;
    authority: string | undefined;
    rawHeaders: readonly string[];
    bodyless: boolean;
    expectContinue: boolean;
  }) {
    this.h2 = init.h2;
    this.req = init.req;
    this.res = init.res;
    this.grpc = init.grpc;
    this.decisionId = init.decisionId;
    this.method = init.method;
    this.target = init.target;
    this.authority = init.authority;
    this.rawHeaders = init.rawHeaders;
    this.bodyless = init.bodyless;
    this.expectContinue = init.expectContinue;
  }

  /** The request body: the HTTP/2 stream or the HTTP/1.1 request (a `BodySource` either way). */
  body(): BodySource {
    return (this.h2 ?? this.req) as BodySource;
  }

  /** Gives back the place this call holds among the app's calls (`upstream.maxRequests`), once. */
  releaseSlot(): void {
    if (this.slots !== null) {
      this.slots.active--;
      this.slots = null;
    }
  }

  /**
   * The caller's stream closed and the span has ended: drops what the exchange still holds of the
   * call. A call in flight across two scavenges has its exchange and streams promoted to V8's old
   * generation, and a pointer from an old object keeps its target alive through every scavenge
   * until the next full collection, dead or not: everything attached to the call later (the app's
   * response fields, trailers, the identity) was promoted with it (docs/performance.md, "Memory").
   * Only fields no event after the close reads are cleared; the upstream stream only once it has
   * closed too (else its own close handler still needs it, and lets go of it then).
   */
  release(): void {
    this.releaseSlot();
    this.rawHeaders = NO_FIELDS;
    this.fwdHeaders = {};
    this.identity = null;
    this.replay = null;
    this.replayOff = true;
    this.requestTrailers = null;
    this.trailers = null;
    if (this.upstream?.closed === true) this.upstream = null;
  }
}

const NO_FIELDS: readonly string[] = Object.freeze([]);
