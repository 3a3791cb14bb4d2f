/**
 * Every attribute and metric name ward emits, in one place (docs/telemetry.md lists them).
 *
 * Standard names follow the OpenTelemetry semantic conventions for RPC and HTTP servers; they are
 * copied here rather than imported from `@opentelemetry/semantic-conventions`, as the OTel SDK
 * itself does for conventions that are not yet stable (`sdk-trace/src/semconv.ts`). ward's own
 * names all live under the `ward.` prefix.
 *
 * Cardinality: metric attributes are only bounded values (service, direction, decision, reason
 * code, outcome, issuer). Rules, routes and subjects appear on spans and decision log records,
 * never as metric attributes.
 */

// ---- OpenTelemetry semantic conventions (RPC, HTTP, errors, end user)
export const RPC_SYSTEM = 'rpc.system';
export const RPC_SERVICE = 'rpc.service';
export const RPC_METHOD = 'rpc.method';
export const RPC_GRPC_STATUS_CODE = 'rpc.grpc.status_code';
export const HTTP_REQUEST_METHOD = 'http.request.method';
export const HTTP_REQUEST_METHOD_ORIGINAL = 'http.request.method_original';
export const HTTP_RESPONSE_STATUS_CODE = 'http.response.status_code';
export const ERROR_TYPE = 'error.type';
export const ENDUSER_ID = 'enduser.id';
export const SERVICE_NAME = 'service.name';
export const TELEMETRY_SDK_LANGUAGE = 'telemetry.sdk.language';
export const TELEMETRY_SDK_NAME = 'telemetry.sdk.name';
export const TELEMETRY_SDK_VERSION = 'telemetry.sdk.version';
/** ward's version, reported as `telemetry.sdk.version` (ward encodes its own telemetry); package.json's (a test checks). */
export const WARD_VERSION = '0.1.0';

// ---- ward's own attributes
/** The service the sidecar guards (inbound) or calls from (outbound). */
export const WARD_SERVICE = 'ward.service';
/** `inbound` or `outbound`. */
export const WARD_DIRECTION = 'ward.direction';
/** `allow`, `deny`, or `dry-run-deny` (allowed, but a dry-run rule or policy would have denied). */
export const WARD_DECISION = 'ward.decision';
/** The stable reason code (`ERR_...`) of a denial or dry-run denial; absent on a plain allow. */
export const WARD_REASON = 'ward.reason';
/** The rule that decided (absent when none applied). */
export const WARD_RULE = 'ward.rule';
/** On a `dry-run-deny`: the rule that would have denied (`ward.rule` is the one that allowed). Spans and logs only. */
export const WARD_DRY_RUN_RULE = 'ward.dry_run.rule';
export const WARD_POLICY_VERSION = 'ward.policy.version';
/** The verified token's issuer. */
export const WARD_ISSUER = 'ward.issuer';
/** The decision id the app also receives (`x-ward-decision-id`). Spans and logs only. */
export const WARD_DECISION_ID = 'ward.decision_id';
/**
 * Decision log records only: the gRPC method or the normalized HTTP path (no query), cut to
 * 256 characters. Never a span or metric attribute (unbounded).
 */
export const WARD_ROUTE = 'ward.route';
/** Outbound: the destination name from the sidecar config. */
export const WARD_DESTINATION = 'ward.destination';
/** Outbound: `hit`, `exchanged`, `client-credentials`, `refused`, `unavailable`, `none`. */
export const WARD_EXCHANGE_OUTCOME = 'ward.exchange.outcome';
/** Outbound: the IdP's OAuth error code when it refused the exchange. */
export const WARD_EXCHANGE_ERROR = 'ward.exchange.error';
export const WARD_CACHE_RESULT = 'ward.cache.result';
export const WARD_RESULT = 'ward.result';
export const WARD_SIGNAL = 'ward.signal';

/** The event name of decision log records. */
export const DECISION_EVENT = 'ward.decision';
/** Instrumentation scope of everything the sidecar emits. */
export const SCOPE = 'ward';

// ---- metric names (Prometheus: dots become underscores, counters get `_total`, `s` -> `_seconds`)
export const M_DECISIONS = 'ward.decisions';
export const M_AUTHZ_DURATION = 'ward.authz.duration';
export const M_EXCHANGE_DURATION = 'ward.exchange.duration';
export const M_EXCHANGE_CACHE = 'ward.exchange.cache.lookups';
export const M_JWKS_FETCHES = 'ward.jwks.fetches';
export const M_POLICY_VERSION = 'ward.policy.version';
export const M_CONTROLPLANE_CONNECTED = 'ward.controlplane.connected';
export const M_UPSTREAM_REQUESTS = 'ward.upstream.requests';
export const M_UPSTREAM_OVERFLOW = 'ward.upstream.overflow';
export const M_TELEMETRY_DROPPED = 'ward.telemetry.dropped';
export const M_TELEMETRY_EXPORTED = 'ward.telemetry.exported';
// The process and its runtime (OpenTelemetry semantic conventions: process, V8 JS, Node.js).
export const M_PROCESS_MEMORY = 'process.memory.usage';
export const M_PROCESS_CPU = 'process.cpu.time';
export const M_V8_HEAP_USED = 'v8js.memory.heap.used';
export const M_V8_HEAP_LIMIT = 'v8js.memory.heap.limit';
export const M_EVENTLOOP_TIME = 'nodejs.eventloop.time';
export const CPU_MODE = 'cpu.mode';
export const V8_HEAP_SPACE = 'v8js.heap.space.name';
export const EVENTLOOP_STATE = 'nodejs.eventloop.state';

/** Latency buckets in seconds: 50 µs to 2.5 s (authorization is usually well under a millisecond). */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];
