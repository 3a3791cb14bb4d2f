import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import {
  decisionLogClient,
  type DecisionEntryWire,
  type DecisionQueryWire,
  type DecisionSummaryWire,
} from '../controlplane/server/decisions/service.ts';
import { type Command, parseFlags, UsageError } from './command.ts';
import { CHANNEL_FLAGS, channelHelp, controlPlaneChannel } from './control-plane-channel.ts';

/**
 * `ward decisions`: recent authorization decisions from the control plane (ward.v1.DecisionLog),
 * as sidecars reported them over OTLP. One line per decision; `--follow` streams new ones;
 * `--json` prints one JSON object per line (NDJSON), for scripts.
 */

const HELP = `Usage: ward decisions [filters] [--follow] [--json] [--summary] [--address HOST:PORT]

Shows recent authorization decisions from the control plane, oldest first, one per line: time,
service, caller (token subject), method/route, decision, reason code, rule, policy version and
trace id. Sidecars send every decision to the control plane as an OpenTelemetry log record;
the control plane keeps the most recent ones (telemetry.maxDecisions).

Filters (combined with AND):
  -s, --service NAME       only this service
  -d, --decision D         allow, deny or dry-run-deny
  -r, --reason CODE        a reason code, e.g. ERR_SCOPE_INSUFFICIENT (docs/reason-codes.md)
  -u, --subject SUB        only calls by this caller (token subject)
      --since T            not before T: a duration ago (30s, 10m, 2h, 1d) or an ISO 8601 time
      --until T            not after T (same forms)
  -n, --limit N            the N most recent matching decisions (default 100)

Output:
  -f, --follow             keep streaming new matching decisions until interrupted
      --json               one JSON object per decision per line (times in ms since the epoch)
      --summary            per-service counts (allowed, denied, dry-run denied, top reasons)

Connection:
  -a, --address HOST:PORT  control plane (default 127.0.0.1:15010)
      --token-file FILE    send 'authorization: Bearer <file content>' (needed unless the
                           control plane allows loopback callers without a token, its default)
${channelHelp(27)}
      --timeout-ms N       give up after N ms without an answer (default 5000; not for --follow)
  -h, --help               show this help

Exit status: 0 when the control plane answered, 1 otherwise.
`;

const DECISIONS = new Set(['allow', 'deny', 'dry-run-deny']);
const GRPC_METHOD = /^\/[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+\/[A-Za-z_]\w*$/;

/** `30s`, `10m`, `2h`, `1d` before `now`, or an ISO 8601 time; ms since the epoch. */
export function parseTime(text: string, now: number): number {
  const rel = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (rel !== null) {
    const n = Number(rel[1]);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
    return now - n * unit;
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (Number.isFinite(t)) return t;
  }
  throw new UsageError(`expected a duration (30s, 10m, 2h, 1d) or an ISO 8601 time, got '${text}'`);
}

const COLUMNS = ['TIME', 'SERVICE', 'CALLER', 'ROUTE', 'DECISION', 'REASON', 'RULE', 'POLICY', 'TRACE'] as const;
/** Widths of every column but the last; long values are not cut, so a line may run wider. */
const WIDTHS = [24, 12, 20, 40, 12, 24, 16, 12];

function cell(i: number, v: string): string {
  return i < WIDTHS.length ? v.padEnd(WIDTHS[i] ?? 0) : v;
}

/**
 * Control characters (C0, DEL, C1) as `\xNN`: a record's fields come from whoever exported it
 * and from callers' tokens (`enduser.id` is a `sub`), and an escape sequence printed raw would
 * rewrite or hide the operator's lines (found in review). `--json` escapes them too (`jsonLine`).
 */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

export function printable(s: string): string {
  return s.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

const NOT_ESCAPED_BY_JSON = /[\u007f-\u009f]/g;

/** JSON for the terminal: JSON.stringify escapes C0 only, so DEL and C1 (U+009B is a CSI) as `\uNNNN` too. */
export function jsonLine(v: unknown, indent?: number): string {
  return JSON.stringify(v, null, indent).replace(NOT_ESCAPED_BY_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function row(cells: readonly string[]): string {
  return cells.map((c, i) => cell(i, printable(c))).join(' ').trimEnd();
}

export function formatHeader(): string {
  return row(COLUMNS);
}

/** One decision as a line (no trailing newline). Empty fields are shown as `-`. */
export function formatDecision(e: DecisionEntryWire): string {
  if (e.missed > 0) return `\u2026 ${e.missed} decision(s) not shown: this follower fell behind`;
  const dash = (s: string): string => (s === '' ? '-' : s);
  // gRPC calls show their method (`/pkg.Service/Method`), HTTP calls `METHOD /path`.
  const route = e.route === '' ? e.method : e.method === 'POST' && GRPC_METHOD.test(e.route) ? e.route : `${e.method} ${e.route}`;
  return row([
    e.timeUnixMs > 0 ? new Date(e.timeUnixMs).toISOString() : '-',
    dash(e.service),
    dash(e.subject),
    dash(e.direction === 'outbound' && e.destination !== '' ? `\u2192${e.destination} ${route}` : route),
    dash(e.decision),
    dash(e.reason),
    // A dry-run denial names the rule that would have denied (`rule>dry-run-rule`).
    dash(e.dryRunRule === '' ? e.rule : `${e.rule === '' ? '-' : e.rule}>${e.dryRunRule}`),
    e.policyVersion === '' ? '-' : e.policyVersion.slice(0, 12),
    dash(e.traceId),
  ]);
}

export function formatSummary(s: DecisionSummaryWire): string {
  const out: string[] = [];
  out.push(`decisions received ${s.received}  kept ${Math.min(s.received - s.evicted, s.capacity)} of ${s.capacity}  evicted ${s.evicted}`);
  out.push('');
  if (s.services.length === 0) {
    out.push('  (no decisions yet)');
    return `${out.join('\n')}\n`;
  }
  const header = ['SERVICE', 'ALLOWED', 'DENIED', 'DRY-RUN', 'LAST', 'TOP REASONS'];
  const rows = s.services.map((x) => [
    x.service,
    String(x.allowed),
    String(x.denied),
    String(x.dryRunDenied),
    x.lastUnixMs > 0 ? new Date(x.lastUnixMs).toISOString() : '-',
    x.reasons.length === 0 ? '-' : x.reasons.slice(0, 3).map((r) => `${r.reason}=${r.count}`).join(' '),
  ]);
  for (const r of rows) for (let i = 0; i < r.length; i++) r[i] = printable(r[i] as string);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  out.push(line(header), ...rows.map(line));
  return `${out.join('\n')}\n`;
}

type DecisionLogClient = grpc.Client & {
  StreamDecisions(req: DecisionQueryWire, md: grpc.Metadata, o?: grpc.CallOptions): grpc.ClientReadableStream<DecisionEntryWire>;
  GetDecisionSummary(req: { service: string }, md: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r?: DecisionSummaryWire) => void): void;
};

export interface DecisionsRequest {
  readonly address: string;
  readonly query: DecisionQueryWire;
  readonly token?: string;
  readonly credentials?: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly timeoutMs: number;
}

/**
 * Streams decisions to `onEntry`; resolves when the stream ends (or, with `follow`, when `signal`
 * aborts). Rejects with the gRPC error.
 */
export async function streamDecisions(r: DecisionsRequest, onEntry: (e: DecisionEntryWire) => void, signal?: AbortSignal): Promise<void> {
  const Client = decisionLogClient();
  const client = new Client(r.address, r.credentials ?? grpc.credentials.createInsecure(), r.channelOptions ?? {}) as unknown as DecisionLogClient;
  const md = new grpc.Metadata();
  if (r.token !== undefined) md.set('authorization', `Bearer ${r.token}`);
  try {
    await new Promise<void>((resolve, reject) => {
      const call = client.StreamDecisions(r.query, md, r.query.follow ? {} : { deadline: Date.now() + r.timeoutMs });
      const onAbort = (): void => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
      call.on('data', onEntry);
      call.on('error', (err: grpc.ServiceError) => {
        signal?.removeEventListener('abort', onAbort);
        if (err.code === grpc.status.CANCELLED && signal?.aborted === true) resolve();
        else reject(err);
      });
      call.on('end', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  } finally {
    client.close();
  }
}

export async function fetchDecisionSummary(r: Omit<DecisionsRequest, 'query'> & { readonly service: string }): Promise<DecisionSummaryWire> {
  const Client = decisionLogClient();
  const client = new Client(r.address, r.credentials ?? grpc.credentials.createInsecure(), r.channelOptions ?? {}) as unknown as DecisionLogClient;
  const md = new grpc.Metadata();
  if (r.token !== undefined) md.set('authorization', `Bearer ${r.token}`);
  try {
    return await new Promise<DecisionSummaryWire>((resolve, reject) => {
      client.GetDecisionSummary({ service: r.service }, md, { deadline: Date.now() + r.timeoutMs }, (err, res) =>
        err !== null || res === undefined ? reject(err ?? new Error('empty response')) : resolve(res),
      );
    });
  } finally {
    client.close();
  }
}

export const command: Command = {
  name: 'decisions',
  summary: 'Show recent authorization decisions from the control plane',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      address: { type: 'string', short: 'a' },
      service: { type: 'string', short: 's' },
      decision: { type: 'string', short: 'd' },
      reason: { type: 'string', short: 'r' },
      subject: { type: 'string', short: 'u' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string', short: 'n' },
      follow: { type: 'boolean', short: 'f' },
      json: { type: 'boolean' },
      summary: { type: 'boolean' },
      'token-file': { type: 'string' },
      ...CHANNEL_FLAGS,
      'timeout-ms': { type: 'string' },
    });
    const address = values.address ?? '127.0.0.1:15010';
    if (!/^[^\s/]+:\d{1,5}$/.test(address)) throw new UsageError(`--address must be HOST:PORT, got '${address}'`);
    if (values.decision !== undefined && !DECISIONS.has(values.decision)) throw new UsageError(`--decision must be allow, deny or dry-run-deny, got '${values.decision}'`);
    if (values.reason !== undefined && !/^ERR_[A-Z_]+$/.test(values.reason)) throw new UsageError(`--reason must be a reason code like ERR_POLICY_DENIED, got '${values.reason}'`);
    const limit = values.limit === undefined ? 100 : Number(values.limit);
    if (!Number.isInteger(limit) || limit <= 0) throw new UsageError('--limit must be a positive integer');
    const timeoutMs = values['timeout-ms'] === undefined ? 5000 : Number(values['timeout-ms']);
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout-ms must be a positive integer');
    const now = Date.now();
    const since = values.since === undefined ? 0 : parseTime(values.since, now);
    const until = values.until === undefined ? 0 : parseTime(values.until, now);
    const token = values['token-file'] === undefined ? undefined : readFileSync(values['token-file'], 'utf8').trim();
    const channel = controlPlaneChannel(values);
    const conn = { address, timeoutMs, ...(token === undefined ? {} : { token }), credentials: channel.credentials, channelOptions: channel.options };

    try {
      if (values.summary === true) {
        const s = await fetchDecisionSummary({ ...conn, service: values.service ?? '' });
        process.stdout.write(values.json === true ? `${jsonLine(s, 2)}\n` : formatSummary(s));
        return 0;
      }
      const query: DecisionQueryWire = {
        service: values.service ?? '',
        decision: values.decision ?? '',
        reason: values.reason ?? '',
        subject: values.subject ?? '',
        sinceUnixMs: since,
        untilUnixMs: until,
        limit,
        follow: values.follow === true,
      };
      const json = values.json === true;
      if (!json) process.stdout.write(`${formatHeader()}\n`);
      const abort = new AbortController();
      const onSignal = (): void => abort.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await streamDecisions({ ...conn, query }, (e) => process.stdout.write(json ? `${jsonLine(e)}\n` : `${formatDecision(e)}\n`), abort.signal);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      return 0;
    } catch (err) {
      const e = err as Partial<grpc.ServiceError>;
      const code = typeof e.code === 'number' ? (grpc.status[e.code] ?? String(e.code)) : 'ERROR';
      process.stderr.write(`ward decisions: ${address}: ${code}: ${e.details ?? e.message ?? String(err)}\n`);
      return 1;
    }
  },
};
