import type { OutgoingHttpHeaders } from 'node:http';
import type { SidecarConfig } from '../config/sidecar.ts';
import type { ErrorCode } from '../errors/codes.ts';
import type { WardError } from '../errors/ward-error.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import type { CompiledPolicy, Facts, Identity, Verdict } from '../policy/model.ts';
import type { SessionStage } from '../session/stage.ts';
import type { RequestSlots } from './slots.ts';

/**
 * What the inbound stage needs from the other stages. Structural types only: the lead wires
 * `authn/` and `policy/` in `cli/sidecar.ts`, tests pass small fakes.
 */

export type AuthResult = { readonly ok: true; readonly identity: Identity } | { readonly ok: false; readonly error: WardError };

export type BearerExtraction =
  | { readonly kind: 'none' }
  | { readonly kind: 'token'; readonly token: string }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly detail: string };

/** One plain object per call, for telemetry. Never carries a token. */
export interface DecisionRecord {
  readonly decisionId: string;
  /** Clock milliseconds at the decision. */
  readonly time: number;
  readonly service: string;
  readonly protocol: 'grpc' | 'http';
  /** HTTP method as received (upper-case when valid). */
  readonly method: string;
  /**
   * The gRPC method or the normalized path; null when the path was refused before normalizing. A
   * call with a gRPC content-type whose path names no method (`grpcMethodOf`) has its path here:
   * telemetry names spans only from a method in form, and keeps any path to the log record.
   */
  readonly route: string | null;
  readonly decision: 'allow' | 'deny';
  /** Reason code of a denial (any stage); null on allow. */
  readonly code: ErrorCode | null;
  readonly rule: string | null;
  readonly policyVersion: string | null;
  readonly issuer: string | null;
  readonly subject: string | null;
  /** On allow: the code a dry-run rule or policy would have denied with. */
  readonly dryRunCode: ErrorCode | null;
  /**
   * On allow: the rule that would have denied it (a matched `dryRun: true` deny rule, or the rule of
   * a dry-run policy's denial); null when none is named. `rule` stays the rule that let it through.
   */
  readonly dryRunRule: string | null;
}

export interface InboundDeps {
  readonly config: Readonly<SidecarConfig>;
  /** The config file, named in errors about files it points to (`inbound.tls`). */
  readonly configFile?: string;
  /** How often `inbound.tls`'s certificate files are checked for a renewal (default 10 s). */
  readonly certPollMs?: number;
  /** Sync on a verified-token cache hit; a promise otherwise. Must not reject (a rejection is ERR_INTERNAL). */
  readonly authenticate: (token: string) => AuthResult | Promise<AuthResult>;
  /**
   * The same check answered through `done` instead of a promise when it waits
   * (`Authenticator.authenticateThen`); used instead of `authenticate` when given.
   */
  readonly authenticateThen?: <C>(token: string, ctx: C, done: (ctx: C, r: AuthResult) => void) => AuthResult | undefined;
  readonly extractBearer: (value: string | readonly string[] | undefined, maxTokenBytes: number) => BearerExtraction;
  /** The current policy snapshot, read per call so updates reach open connections. */
  readonly policy: () => CompiledPolicy | null;
  /** Pure; `now` is `clock()` (milliseconds). */
  readonly evaluate: (policy: CompiledPolicy, facts: Facts, now: number) => Verdict;
  readonly log: Logger;
  readonly clock: Clock;
  readonly onDecision?: (record: DecisionRecord) => void;
  /** Per-call tracing (telemetry/); absent means no tracing work at all on the request path. */
  readonly tracer?: CallTracer;
  /** Browser sign-in and sessions (session/); absent (no `session` config) means no cookie is looked at. */
  readonly session?: SessionStage;
}

/**
 * The tracing hook of a stage (implemented by telemetry/, called by the inbound and outbound
 * stacks). The span starts at the decision, when its attributes are known, so a sampler can keep
 * every denial; its start time is the call's arrival.
 */
export interface CallTracer {
  /** The time base of `startedAt`, read once when a call arrives (milliseconds since the epoch, fractional). */
  now(): number;
  /**
   * At the decision, after `onDecision`: records the decision (span, log record, metrics),
   * continuing the caller's `traceparent` found in `rawHeaders`. On an allow `fwd` is the header
   * object for the next hop: `traceparent` is set in it so the next hop continues this span.
   * Returns the call's span handle (null when not traced). Must not throw.
   */
  begin(record: DecisionRecord, startedAt: number, rawHeaders: readonly string[], fwd: OutgoingHttpHeaders | null): CallSpan | null;
}

export interface CallSpan {
  /**
   * The call is over. `status`: HTTP status sent to the caller (0 if none); `grpcStatus`: the
   * `grpc-status` sent (-1 if none); `failed`: reset, or the app/next hop failed.
   */
  end(status: number, grpcStatus: number, failed: boolean): void;
}

/** Live counters (read them, do not write). */
export interface InboundCounters {
  /** Calls accepted and not yet closed downstream (HTTP/2 streams + HTTP/1.1 requests). */
  activeStreams: number;
  requests: number;
  allowed: number;
  denied: number;
  /** Allowed calls the app failed (unreachable, reset, timed out). */
  upstreamErrors: number;
  /** Calls at the app now, the limit (`upstream.maxRequests`), and those refused at it. */
  readonly upstreamRequests: RequestSlots;
  /** Open client HTTP/2 sessions and HTTP/1.1 connections. */
  h2Sessions: number;
  h1Connections: number;
}
