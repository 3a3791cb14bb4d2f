import { accessSync, constants } from 'node:fs';
import * as z from '../lib/schema.ts';
import { ConfigError } from '../errors/ward-error.ts';
import { issueAt, type FieldPath, type YamlLocator } from '../lib/yaml-locate.ts';

/**
 * The sidecar's `telemetry:` block and the standard `OTEL_*` environment variables, resolved
 * once at start-up into one frozen `ResolvedTelemetry`. This is the only reader of `OTEL_*`
 * (config/ is the sole reader of process.env); `telemetry/` receives the resolved value.
 *
 * Precedence, per setting: a value written in the config file, then the `OTEL_*` variable, then
 * the default. So a platform can set `OTEL_*` for every workload and a file can still pin a value.
 * Where the default export goes: the config's `endpoint`, else `OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT`,
 * else the control plane's address (when the sidecar has one), else nowhere (metrics stay on
 * the admin port's `/metrics`, decisions in the log).
 */

const queue = z.strictObject({
  maxSize: z.int().min(1).max(1_000_000).optional().meta({
    description:
      'Spans (and, separately, decision log records) waiting for export. When full, new ones are dropped and counted (`ward_telemetry_dropped_total`); calls are never slowed. Default 2048 (`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BLRP_MAX_QUEUE_SIZE`).',
  }),
  batchSize: z.int().min(1).max(100_000).optional().meta({
    description: 'Largest batch per OTLP Export call. Default 512 (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).',
  }),
  delayMs: z.int().min(1).max(3_600_000).optional().meta({
    description:
      'Longest wait before a partial batch is exported. Default 1000 (shorter than the OTel default of 5000 so `ward decisions` is near-live; `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BLRP_SCHEDULE_DELAY`).',
  }),
});

export const telemetryConfigSchema = z.strictObject({
  enabled: z.boolean().optional().meta({
    description:
      'Traces, decision log records and metrics. Default true; `OTEL_SDK_DISABLED=true` turns it off. When off, no telemetry work is done per call and `/metrics` answers 404.',
  }),
  endpoint: z.string().min(1).optional().meta({
    description:
      'OTLP/gRPC endpoint for all three signals: `host:port` or `http://host:port` (cleartext) or `https://host:port` (TLS). Default: `OTEL_EXPORTER_OTLP_ENDPOINT` (and the per-signal variables), else the control plane, else no export.',
    examples: ['127.0.0.1:15010', 'https://otel-collector.observability:4317'],
  }),
  caFile: z.string().min(1).optional().meta({
    description: 'PEM CA bundle trusted for an `https://` endpoint, relative to the config file. Default: `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system roots. Read again at each connection.',
  }),
  headers: z
    .record(
      z
        .string()
        .regex(/^[a-z0-9][a-z0-9._-]*$/)
        .refine((k) => reservedHeader(k) === null, { message: 'set by the exporter itself, or not allowed in gRPC metadata (see the description)' }),
      z.string().regex(/^[\x20-\x7e]*$/, 'gRPC metadata values are printable ASCII'),
    )
    .optional()
    .meta({
      description:
        'gRPC metadata sent with every export (lower-case names). Default: `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values percent-decoded). Names are `[a-z0-9][a-z0-9._-]*` (a variable\'s are lower-cased first), not ending in `-bin`, and not one the exporter sets or HTTP/2 forbids (`content-type`, `content-length`, `te`, `host`, `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `grpc-*`; `authorization` on a signal exported to the control plane, which is sent the sidecar\'s own token). Values are printable ASCII without leading or trailing spaces. A bad one is a start-up error (its value never shown). Prefer the variable for secrets.',
    }),
  serviceName: z.string().min(1).optional().meta({
    description: 'The `service.name` resource attribute. Default: `OTEL_SERVICE_NAME`, else the sidecar\'s `service`.',
  }),
  resourceAttributes: z.record(z.string().min(1), z.string()).optional().meta({
    description: 'Extra resource attributes, merged over `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`).',
    examples: [{ 'deployment.environment.name': 'prod', 'k8s.pod.name': 'orders-7c9f' }],
  }),
  sampleRatio: z.number().min(0).max(1).optional().meta({
    description:
      'Share of new traces (no sampled caller) recorded; a caller\'s sampling decision is followed. Denials and dry-run denials are always recorded, whatever the ratio. Default 1, or from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.',
  }),
  exportTimeoutMs: z.int().min(1).max(600_000).optional().meta({
    description: 'Deadline of one OTLP Export call; a failed or late export is dropped and counted, never retried in a loop. Default 10000 (`OTEL_EXPORTER_OTLP_TIMEOUT`).',
  }),
  metricsIntervalMs: z.int().min(100).max(86_400_000).optional().meta({
    description: 'How often metrics are pushed over OTLP (the admin `/metrics` is always current). Default 60000 (`OTEL_METRIC_EXPORT_INTERVAL`).',
  }),
  queue: queue.optional().meta({ description: 'Export queues: bounded; when full they drop and count.' }),
});

export type TelemetryConfig = z.output<typeof telemetryConfigSchema>;

/** Where one signal goes. */
export interface OtlpTarget {
  /** `host:port` for grpc-js. */
  readonly address: string;
  readonly tls: boolean;
  /** PEM CA file (absolute), or undefined for the system roots. */
  readonly caFile: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  /**
   * Where this signal's endpoint came from. Per signal, because the standard variables are: with
   * only `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, traces go to that collector and logs and metrics
   * to the control plane. Only a `control-plane` target is sent the sidecar's control-plane token.
   */
  readonly source: 'config' | 'env' | 'control-plane';
}

export interface QueueLimits {
  readonly maxSize: number;
  readonly batchSize: number;
  readonly delayMs: number;
}

export interface SamplerConfig {
  /** Ratio for root spans (and for every span when not parent-based). */
  readonly ratio: number;
  /** Follow a remote caller's sampled flag. */
  readonly parentBased: boolean;
}

export interface ResolvedTelemetry {
  readonly enabled: boolean;
  readonly serviceName: string;
  readonly resourceAttributes: Readonly<Record<string, string>>;
  readonly sampler: SamplerConfig;
  /** null: that signal is not exported over OTLP. */
  readonly traces: OtlpTarget | null;
  readonly logs: OtlpTarget | null;
  readonly metrics: OtlpTarget | null;
  readonly spanQueue: QueueLimits;
  readonly logQueue: QueueLimits;
  readonly metricsIntervalMs: number;
}

type Env = Readonly<Record<string, string | undefined>>;

const SIGNALS = ['traces', 'logs', 'metrics'] as const;
type Signal = (typeof SIGNALS)[number];

/**
 * Resolves the `telemetry:` block against the environment. `controlPlane` is the control plane's
 * `host:port` when the sidecar has one: the default destination. `file` and `baseDir` name the
 * config file for errors and relative paths; `locator` (the config's) puts an error about a field
 * at its line:column. An error about an `OTEL_*` variable is reported as `(environment)`.
 */
export function resolveTelemetry(
  cfg: TelemetryConfig,
  ctx: {
    readonly service: string;
    readonly file: string;
    readonly baseDir: string;
    readonly locator?: YamlLocator | undefined;
    /** The sidecar's control plane; `caFile` absolute, for its TLS. */
    readonly controlPlane?: { readonly address: string; readonly tls: boolean; readonly caFile?: string };
  },
  env: Env = process.env,
): ResolvedTelemetry {
  // A string path is an environment variable; an array, a field of the config file.
  const issues: { path: string | FieldPath; message: string }[] = [];
  const fail = (path: string | FieldPath, message: string): void => {
    issues.push({ path, message });
  };

  const enabled = telemetryEnabled(cfg, env, fail);

  const serviceName = cfg.serviceName ?? nonEmpty(env['OTEL_SERVICE_NAME']) ?? ctx.service;
  const resourceAttributes = { ...keyValues(env, 'OTEL_RESOURCE_ATTRIBUTES', fail), ...cfg.resourceAttributes };
  const sampler = resolveSampler(cfg, env, fail);
  const timeoutMs = cfg.exportTimeoutMs ?? int(env, 'OTEL_EXPORTER_OTLP_TIMEOUT', 1, 600_000, fail) ?? 10_000;
  const caEnv = nonEmpty(env['OTEL_EXPORTER_OTLP_CERTIFICATE']);
  const caFile = cfg.caFile !== undefined ? absolute(ctx.baseDir, cfg.caFile) : caEnv;

  const protocol = nonEmpty(env['OTEL_EXPORTER_OTLP_PROTOCOL']);
  const targets: Record<Signal, OtlpTarget | null> = { traces: null, logs: null, metrics: null };
  for (const s of SIGNALS) {
    const upper = s.toUpperCase();
    const exporter = nonEmpty(env[`OTEL_${upper}_EXPORTER`]);
    if (exporter !== undefined) {
      const names = exporter.split(',').map((x) => x.trim());
      const bad = names.find((n) => n !== 'otlp' && n !== 'none' && !(s === 'metrics' && n === 'prometheus'));
      if (bad !== undefined) fail(`OTEL_${upper}_EXPORTER`, `'${bad}' is not supported (otlp, none${s === 'metrics' ? ', prometheus' : ''})`);
      if (!names.includes('otlp')) continue;
    }
    const p = nonEmpty(env[`OTEL_EXPORTER_OTLP_${upper}_PROTOCOL`]) ?? protocol;
    if (p !== undefined && p !== 'grpc') fail(`OTEL_EXPORTER_OTLP_${upper}_PROTOCOL`, `only grpc is supported, got '${p}'`);
    let where: { text: string; path: string | FieldPath; source: OtlpTarget['source'] } | undefined;
    if (cfg.endpoint !== undefined) where = { text: cfg.endpoint, path: ['telemetry', 'endpoint'], source: 'config' };
    else {
      const specific = nonEmpty(env[`OTEL_EXPORTER_OTLP_${upper}_ENDPOINT`]);
      const general = nonEmpty(env['OTEL_EXPORTER_OTLP_ENDPOINT']);
      if (specific !== undefined) where = { text: specific, path: `OTEL_EXPORTER_OTLP_${upper}_ENDPOINT`, source: 'env' };
      else if (general !== undefined) where = { text: general, path: 'OTEL_EXPORTER_OTLP_ENDPOINT', source: 'env' };
    }
    let address: string;
    let tls: boolean;
    let ca = caFile;
    let source: OtlpTarget['source'];
    if (where !== undefined) {
      const parsed = parseEndpoint(where.text);
      if (parsed === null) {
        fail(where.path, `expected host:port, http://host:port or https://host:port, got '${where.text}'`);
        continue;
      }
      ({ address, tls } = parsed);
      source = where.source;
    } else if (ctx.controlPlane !== undefined) {
      ({ address, tls } = ctx.controlPlane);
      ca = caFile ?? ctx.controlPlane.caFile;
      source = 'control-plane';
    } else continue;
    // Checked here, at start-up: a header the exporter cannot send, or one the collector refuses,
    // would otherwise fail every export and lose the whole decision trail (found in review).
    const headers = {
      ...exportHeaders(env, 'OTEL_EXPORTER_OTLP_HEADERS', source, fail),
      ...exportHeaders(env, `OTEL_EXPORTER_OTLP_${upper}_HEADERS`, source, fail),
      ...fileHeaders(cfg.headers, source, fail),
    };
    targets[s] = Object.freeze({ address, tls, caFile: tls ? ca : undefined, headers: Object.freeze(headers), timeoutMs, source });
  }

  // A CA file that cannot be read is a configuration error here, at its field, not an ENOENT
  // out of the exporter at start-up (found in review).
  const usedCa = Object.values(targets).find((t) => t?.caFile !== undefined)?.caFile;
  if (enabled && usedCa !== undefined) {
    try {
      accessSync(usedCa, constants.R_OK);
    } catch (err) {
      const field = usedCa === caFile ? (cfg.caFile !== undefined ? ['telemetry', 'caFile'] : 'OTEL_EXPORTER_OTLP_CERTIFICATE') : ['policy', 'controlPlane', 'tls', 'caFile'];
      fail(field, `cannot read ${usedCa}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }

  const spanQueue = resolveQueue(cfg, env, 'BSP', fail);
  const logQueue = resolveQueue(cfg, env, 'BLRP', fail);
  const metricsIntervalMs = cfg.metricsIntervalMs ?? int(env, 'OTEL_METRIC_EXPORT_INTERVAL', 100, 86_400_000, fail) ?? 60_000;

  if (issues.length > 0) {
    throw new ConfigError(
      issues.map((i) =>
        typeof i.path === 'string'
          ? { file: '(environment)', line: 1, column: 1, path: i.path, message: i.message }
          : issueAt(ctx.locator, ctx.file, i.path, i.message),
      ),
    );
  }
  return Object.freeze({
    enabled,
    serviceName,
    resourceAttributes: Object.freeze(resourceAttributes),
    sampler,
    traces: targets.traces,
    logs: targets.logs,
    metrics: targets.metrics,
    spanQueue,
    logQueue,
    metricsIntervalMs,
  });
}

/** `host:port`, `http://host:port[/...]`, `https://host:port[/...]` -> grpc-js address and TLS flag. */
export function parseEndpoint(text: string): { address: string; tls: boolean } | null {
  const t = text.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(t)) {
    let u: URL;
    try {
      u = new URL(t);
    } catch {
      return null;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    if (u.hostname === '') return null;
    const tls = u.protocol === 'https:';
    const port = u.port === '' ? (tls ? '443' : '80') : u.port;
    return { address: `${u.hostname}:${port}`, tls };
  }
  const m = /^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/i.exec(t);
  if (m === null) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { address: t, tls: false };
}

function resolveSampler(cfg: TelemetryConfig, env: Env, fail: (p: string, m: string) => void): SamplerConfig {
  if (cfg.sampleRatio !== undefined) return Object.freeze({ ratio: cfg.sampleRatio, parentBased: true });
  const name = nonEmpty(env['OTEL_TRACES_SAMPLER']) ?? 'parentbased_always_on';
  const argText = nonEmpty(env['OTEL_TRACES_SAMPLER_ARG']);
  let arg = 1;
  if (argText !== undefined) {
    const n = Number(argText);
    if (!Number.isFinite(n) || n < 0 || n > 1) fail('OTEL_TRACES_SAMPLER_ARG', `expected a number in [0, 1], got '${argText}'`);
    else arg = n;
  }
  switch (name) {
    case 'always_on':
      return Object.freeze({ ratio: 1, parentBased: false });
    case 'always_off':
      return Object.freeze({ ratio: 0, parentBased: false });
    case 'traceidratio':
      return Object.freeze({ ratio: arg, parentBased: false });
    case 'parentbased_always_on':
      return Object.freeze({ ratio: 1, parentBased: true });
    case 'parentbased_always_off':
      return Object.freeze({ ratio: 0, parentBased: true });
    case 'parentbased_traceidratio':
      return Object.freeze({ ratio: arg, parentBased: true });
    default:
      fail('OTEL_TRACES_SAMPLER', `'${name}' is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)`);
      return Object.freeze({ ratio: 1, parentBased: true });
  }
}

function resolveQueue(cfg: TelemetryConfig, env: Env, prefix: 'BSP' | 'BLRP', fail: (p: string, m: string) => void): QueueLimits {
  const maxSize = cfg.queue?.maxSize ?? int(env, `OTEL_${prefix}_MAX_QUEUE_SIZE`, 1, 1_000_000, fail) ?? 2048;
  const batch = cfg.queue?.batchSize ?? int(env, `OTEL_${prefix}_MAX_EXPORT_BATCH_SIZE`, 1, 100_000, fail) ?? 512;
  const delayMs = cfg.queue?.delayMs ?? int(env, `OTEL_${prefix}_SCHEDULE_DELAY`, 1, 3_600_000, fail) ?? 1000;
  // As in the OTel SDK: a batch never exceeds the queue.
  return Object.freeze({ maxSize, batchSize: Math.min(batch, maxSize), delayMs });
}

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === '' ? undefined : t;
}

/** Whether telemetry is on: `enabled`, else unless `OTEL_SDK_DISABLED=true`. (A cluster's primary asks too: it serves `/metrics` only then.) */
export function telemetryEnabled(cfg: Readonly<TelemetryConfig>, env: Env = process.env, fail: (p: string, m: string) => void = () => {}): boolean {
  return cfg.enabled ?? bool(env, 'OTEL_SDK_DISABLED', fail) !== true;
}

function bool(env: Env, name: string, fail: (p: string, m: string) => void): boolean | undefined {
  const v = nonEmpty(env[name])?.toLowerCase();
  if (v === undefined) return undefined;
  if (v === 'true') return true;
  if (v === 'false') return false;
  fail(name, `expected true or false, got '${v}'`);
  return undefined;
}

function int(env: Env, name: string, min: number, max: number, fail: (p: string, m: string) => void): number | undefined {
  const v = nonEmpty(env[name]);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    fail(name, `expected an integer in [${min}, ${max}], got '${v}'`);
    return undefined;
  }
  return n;
}

/** W3C Baggage-style `k=v,k2=v2` (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS); values percent-decoded. */
function keyValues(env: Env, name: string, fail: (p: string, m: string) => void): Record<string, string> {
  const v = nonEmpty(env[name]);
  const out: Record<string, string> = {};
  if (v === undefined) return out;
  for (const part of v.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    const key = eq === -1 ? '' : part.slice(0, eq).trim();
    if (key === '') {
      fail(name, `expected key=value pairs separated by commas`);
      return {};
    }
    try {
      out[key] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      fail(name, `bad percent-encoding in the value of '${key}'`);
      return {};
    }
  }
  return out;
}

/** A gRPC metadata name as the file's keys are written (HTTP/2 field names are lower-case, RFC 9113 §8.2.1). */
const HEADER_NAME = /^[a-z0-9][a-z0-9._-]*$/;
/**
 * A gRPC ASCII metadata value (PROTOCOL-HTTP2.md: `ASCII-Value = 1*( %x20-%x7E )`, so no tab
 * either, although HTTP allows it), without the leading or trailing space an HTTP/2 field value
 * must not have (RFC 9113 §8.2.1; RFC 9110 §5.5). Empty is allowed.
 */
const HEADER_VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/;
/**
 * Fields the exporter writes itself (src/h2/grpc-unary.ts: `content-type`, `te`, `grpc-timeout`),
 * the connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), `host` (`:authority` in
 * HTTP/2) and `content-length` (the exporter frames the body): a second one makes the request
 * malformed or the collector refuse it. `grpc-*` names are reserved by gRPC.
 */
const RESERVED_HEADERS: ReadonlySet<string> = new Set(['content-type', 'content-length', 'te', 'host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** Why `name` (valid, lower-case) cannot be an export header on any signal, or null. */
function reservedHeader(name: string): string | null {
  if (RESERVED_HEADERS.has(name) || name.startsWith('grpc-')) return `'${name}' is set by the exporter itself or not allowed in gRPC metadata`;
  if (name.endsWith('-bin')) return `'${name}': a \`-bin\` name holds binary metadata, which a config cannot give`;
  return null;
}

/**
 * Why an export header cannot be sent to a target of this `source`, or null. Never shows the
 * value: headers carry collector credentials.
 */
function headerProblem(name: string, value: string, source: OtlpTarget['source']): string | null {
  const reserved = reservedHeader(name);
  if (reserved !== null) return reserved;
  // The exporter adds the sidecar's own control-plane token there; a second `authorization`
  // would be ambiguous, and would hand a collector's credential to the control plane.
  if (name === 'authorization' && source === 'control-plane') return `'authorization' is set by the sidecar (its control-plane token) on a signal exported to the control plane; give a collector's credentials in the per-signal variable of the signal sent to it`;
  if (!HEADER_VALUE.test(value)) return `the value of '${name}' is not a gRPC metadata value (printable ASCII, no leading or trailing spaces)`;
  return null;
}

/** `OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS`: names lower-cased, then checked like the file's. */
function exportHeaders(env: Env, variable: string, source: OtlpTarget['source'], fail: (p: string, m: string) => void): Record<string, string> {
  const raw = keyValues(env, variable, fail);
  const out: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(raw)) {
    n++;
    const name = k.toLowerCase();
    // The name is not shown either: a malformed pair may be a mangled secret.
    if (!HEADER_NAME.test(name)) fail(variable, `header ${n}: the name is not a gRPC metadata name (letters, digits, '.', '_', '-')`);
    else {
      const problem = headerProblem(name, v, source);
      if (problem !== null) fail(variable, problem);
      else out[name] = v;
    }
  }
  return out;
}

/** `telemetry.headers`: the schema checked the names' form (a caller may not have parsed it). */
function fileHeaders(headers: Readonly<Record<string, string>> | undefined, source: OtlpTarget['source'], fail: (p: FieldPath, m: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  if (headers === undefined) return out;
  for (const [name, v] of Object.entries(headers)) {
    const problem = HEADER_NAME.test(name) ? headerProblem(name, v, source) : 'not a gRPC metadata name (lower-case letters, digits, \'.\', \'_\', \'-\')';
    if (problem !== null) fail(['telemetry', 'headers', name], problem);
    else out[name] = v;
  }
  return out;
}

function absolute(baseDir: string, p: string): string {
  return p.startsWith('/') ? p : `${baseDir}/${p}`;
}
