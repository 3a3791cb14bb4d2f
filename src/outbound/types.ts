import type { OutgoingHttpHeaders } from 'node:http';
import type { CallSpan } from '../inbound/types.ts';
import type { OutboundConfig } from '../config/outbound.ts';
import type { ErrorCode } from '../errors/codes.ts';
import type { TokenOutcome } from '../exchange/broker.ts';
import type { TokenTarget } from '../exchange/token-client.ts';
import type { BearerExtraction } from '../inbound/types.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import type { YamlLocator } from '../lib/yaml-locate.ts';

/**
 * What the outbound (egress) stage needs from the others. Structural types: `cli/sidecar.ts`
 * wires the real token broker (src/exchange) and bearer extraction (src/authn); tests pass fakes.
 */

/** Where the sidecar gets a token for an outgoing call: `exchange/broker.ts` implements it. */
export interface TokenSource {
  /** Exchanged from `subjectToken`, or client credentials when null. Sync on a cache hit; never rejects. */
  token(target: TokenTarget, subjectToken: string | null): TokenOutcome | Promise<TokenOutcome>;
}

export interface OutboundDeps {
  /** This sidecar's service (the `realm` of challenges it writes). */
  readonly service: string;
  readonly config: Readonly<OutboundConfig>;
  /** The sidecar config's directory: a destination's `tls.caFile` is relative to it (default: the working directory). */
  readonly baseDir?: string;
  /** The sidecar config file, for errors about it. */
  readonly configFile?: string;
  /** Where the config file spells each field: such an error is at its line:column. */
  readonly locator?: YamlLocator | undefined;
  /** `identityHeaders.prefix`: fields with it are dropped from the app's outgoing calls too. */
  readonly identityPrefix: string;
  readonly maxTokenBytes: number;
  readonly extractBearer: (value: string | readonly string[] | undefined, maxTokenBytes: number) => BearerExtraction;
  readonly tokens: TokenSource;
  readonly log: Logger;
  readonly clock: Clock;
  readonly onDecision?: (record: OutboundDecisionRecord) => void;
  /**
   * Telemetry for each call (a CLIENT span continuing the app's `traceparent`, a decision record,
   * metrics). When set it replaces `onDecision`; the span ends when the call closes.
   */
  readonly tracer?: OutboundTracer;
}

/** One plain object per outgoing call, for logs and telemetry. Never carries a token. */
export interface OutboundDecisionRecord {
  readonly decisionId: string;
  readonly time: number;
  readonly service: string;
  readonly direction: 'outbound';
  /** The declared destination, `(passthrough)`, or null when none was resolved. */
  readonly destination: string | null;
  readonly protocol: 'grpc' | 'http';
  readonly method: string;
  /** The gRPC method or the path without query; null when the request was refused before. */
  readonly route: string | null;
  readonly decision: 'allow' | 'deny';
  readonly code: ErrorCode | null;
  /** The IdP's OAuth error code on ERR_EXCHANGE_REFUSED (`invalid_target`, ...). */
  readonly oauthError: string | null;
  /** How the forwarded credential was obtained. */
  readonly token: 'exchange' | 'client-credentials' | 'none' | null;
  /** The token came from the cache (no token request for this call). */
  readonly cached: boolean;
  /** How long this call waited for a token request to the IdP (ms); null when it made none. */
  readonly tokenMs: number | null;
}

/** Live counters (read them, do not write). */
export interface OutboundCounters {
  activeStreams: number;
  h2Sessions: number;
  h1Connections: number;
  /** Calls from the app. */
  requests: number;
  /** Calls sent on to a destination (with a token, or pass-through). */
  forwarded: number;
  /** Calls refused by the sidecar (any code). */
  refused: number;
  /** Calls forwarded by pass-through. */
  passthrough: number;
  /** Forwarded calls the destination failed (unreachable, reset, timed out). */
  upstreamErrors: number;
}

/** What the egress stack needs from telemetry (src/telemetry implements it). */
export interface OutboundTracer {
  /** A timestamp for the call's arrival, in the tracer's clock. */
  now(): number;
  /**
   * Records the decision; on an allow, `fwd` gets the `traceparent` of the new span so the
   * destination continues it. Returns the span to end when the call closes (null if untraced).
   */
  decision(record: OutboundDecisionRecord, startedAt: number, rawHeaders: readonly string[], fwd: OutgoingHttpHeaders | null): CallSpan | null;
}
