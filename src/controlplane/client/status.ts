import * as grpc from '@grpc/grpc-js';
import { formatIssue } from '../../errors/ward-error.ts';
import { type FileIssueWire, policyDiscoveryClient, type StatusResponseWire } from '../proto.ts';

/** GetStatus client and its renderings, for `ward status`. */

export async function fetchStatus(opts: {
  readonly address: string;
  readonly token?: string;
  readonly service?: string;
  readonly credentials?: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly timeoutMs?: number;
}): Promise<StatusResponseWire> {
  const Client = policyDiscoveryClient();
  const client = new Client(opts.address, opts.credentials ?? grpc.credentials.createInsecure(), opts.channelOptions ?? {}) as unknown as grpc.Client & {
    GetStatus(
      req: { service: string },
      md: grpc.Metadata,
      o: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, r?: StatusResponseWire) => void,
    ): void;
  };
  const md = new grpc.Metadata();
  if (opts.token !== undefined) md.set('authorization', `Bearer ${opts.token}`);
  try {
    return await new Promise<StatusResponseWire>((resolve, reject) => {
      client.GetStatus({ service: opts.service ?? '' }, md, { deadline: Date.now() + (opts.timeoutMs ?? 5000) }, (err, r) =>
        err !== null || r === undefined ? reject(err ?? new Error('empty response')) : resolve(r),
      );
    });
  } finally {
    client.close();
  }
}

const SHORT_VERSION = 12;

function short(v: string): string {
  return v === '' ? '-' : v.slice(0, SHORT_VERSION);
}

function time(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

function issues(list: readonly FileIssueWire[]): string {
  if (list.length === 0) return '-';
  const first = formatIssue(list[0] as FileIssueWire);
  return list.length === 1 ? first : `${first} (+${list.length - 1} more)`;
}

function oneLine(s: string): string {
  const nl = s.indexOf('\n');
  return nl === -1 ? s : `${s.slice(0, nl)} \u2026`;
}

/**
 * Control characters (C0, DEL, C1) and the bidirectional overrides, which a terminal would act
 * on: a newline forges table rows, an ANSI escape rewrites the screen, a bidi override reorders
 * what is shown.
 */
const UNPRINTABLE = /[\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

/**
 * A value shown as is, except the characters above, written as escapes (`\n`, `\x1b`, `\u202e`).
 * Every cell goes through it: the values come from the control plane, and some of them from
 * whatever its sidecars sent (instance ids, NACK messages). Found in review: an instance id
 * with a newline forged a row of another service.
 */
function visible(s: string): string {
  return s.replace(UNPRINTABLE, (c) => {
    const code = c.charCodeAt(0);
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** Columns padded to their widest cell; the last column is not padded. Cells are made `visible`. */
function table(header: readonly string[], unsafeRows: readonly (readonly string[])[]): string {
  const rows = unsafeRows.map((r) => r.map(visible));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** The human rendering: services, refused files, sidecars. Versions are shortened to 12 characters. */
export function formatStatus(s: StatusResponseWire): string {
  const out: string[] = [];
  out.push(`control plane ${visible(s.controlPlaneId)}  policy dir ${visible(s.policyDir)}  started ${time(s.startedAtUnixMs)}`);
  out.push('');
  out.push('SERVICES');
  out.push(
    s.services.length === 0
      ? '  (none)'
      : table(
          ['SERVICE', 'VERSION', 'SOURCE', 'UPDATED', 'LAST ERROR'],
          s.services.map((x) => [x.service, short(x.version), x.sourceFile, time(x.updatedAtUnixMs), issues(x.lastError)]),
        ),
  );
  if (s.files.length > 0) {
    out.push('');
    out.push('REFUSED FILES (the previous valid version of their service stays in force)');
    out.push(table(['FILE', 'SERVICE', 'SINCE', 'ERROR'], s.files.map((f) => [f.file, f.service === '' ? '-' : f.service, time(f.sinceUnixMs), issues(f.issues)])));
  }
  out.push('');
  out.push('SIDECARS');
  out.push(
    s.sidecars.length === 0
      ? '  (none connected)'
      : table(
          ['SERVICE', 'INSTANCE', 'SUBJECT', 'ACKED', 'PENDING', 'CONNECTED SINCE', 'LAST NACK'],
          s.sidecars.map((c) => [
            c.service,
            c.instanceId,
            c.subject,
            short(c.ackedVersion),
            short(c.pendingVersion),
            time(c.connectedSinceUnixMs),
            c.lastNack === null ? '-' : `${short(c.lastNack.version)}: ${oneLine(c.lastNack.message)}`,
          ]),
        ),
  );
  return `${out.join('\n')}\n`;
}
