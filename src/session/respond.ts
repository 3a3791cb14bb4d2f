import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { H2ServerStream } from '../h2/server.ts';
import type { ErrorCode } from '../errors/codes.ts';
import { ERROR_TABLE } from '../errors/table.ts';

/**
 * What the session stage writes itself: redirects (to the provider, back to the app, the
 * refresh bounce), small HTML pages (denials for browsers, sign-in failures, signed out) and
 * plain-text denials that must also clear a cookie. Status, message and challenge of a denial
 * come from `ERROR_TABLE`, like every other ward response; `x-ward-reason` and
 * `x-ward-decision-id` are set the same way as by inbound/respond.ts.
 */

/** The parts of an inbound call this stage reads and answers on (`Exchange` has them all). */
export interface SessionCall {
  readonly h2: H2ServerStream | null;
  readonly req: IncomingMessage | null;
  readonly res: ServerResponse | null;
  readonly grpc: boolean;
  readonly decisionId: string;
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly authority: string | undefined;
  /** Non-null for a WebSocket handshake (inbound/exchange.ts `upgrade`). */
  readonly upgrade?: object | null;
  fwdHeaders: OutgoingHttpHeaders;
  closed: boolean;
  finished: boolean;
  responseStarted: boolean;
}

export type Headers = Record<string, string | string[] | number>;

const HTML = 'text/html; charset=utf-8';
const TEXT = 'text/plain; charset=utf-8';
/**
 * Pages hold no script and load nothing. (No `form-action`: the sign-out form's redirect goes on
 * to the provider.) `same-origin`, not `no-referrer`: under `no-referrer` a browser sends
 * `Origin: null` with the page's own sign-out POST (Fetch, "append a request Origin header"),
 * which the CSRF check must refuse, so the sidecar's sign-out buttons never worked (regression).
 * Nothing leaves for another origin either way.
 */
const PAGE_HEADERS: Readonly<Headers> = Object.freeze({
  'content-type': HTML,
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  'referrer-policy': 'same-origin',
});

/** Writes one complete response, once; never throws (a client that left just loses it). */
export function writeResponse(t: SessionCall, status: number, headers: Headers, body: string): void {
  if (t.finished || t.closed) return;
  t.finished = true;
  t.responseStarted = true;
  const bytes = Buffer.from(body, 'utf8');
  const all: Headers = { ...headers, 'content-length': bytes.length, 'x-ward-decision-id': t.decisionId };
  const head = t.method === 'HEAD';
  try {
    if (t.h2 !== null) {
      if (t.h2.destroyed || t.h2.headersSent) return;
      t.h2.respond({ ':status': status, ...all }, { endStream: head || bytes.length === 0 });
      if (!head && bytes.length > 0) t.h2.end(bytes);
      return;
    }
    const res = t.res;
    if (res === null || res.headersSent) return;
    res.writeHead(status, all);
    res.end(head ? undefined : bytes);
  } catch {
    t.h2?.destroy();
    t.res?.destroy();
  }
}

export function redirect(t: SessionCall, status: 302 | 303 | 307, location: string, cookies: readonly string[], reason: ErrorCode | null): void {
  const h: Headers = { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer', 'content-type': TEXT };
  if (cookies.length > 0) h['set-cookie'] = [...cookies];
  if (reason !== null) h['x-ward-reason'] = reason;
  writeResponse(t, status, h, '');
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function page(t: SessionCall, status: number, title: string, bodyHtml: string, cookies: readonly string[], reason: ErrorCode | null, extra: Headers = {}): void {
  const h: Headers = { ...PAGE_HEADERS, ...extra };
  if (cookies.length > 0) h['set-cookie'] = [...cookies];
  if (reason !== null) h['x-ward-reason'] = reason;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;color:#222}code{background:#eee;padding:0 .2em}</style></head>
<body>
${bodyHtml}
</body></html>
`;
  writeResponse(t, status, h, html);
}

const SIGN_OUT_FORM = '<form method="post" action="/.ward/logout"><button type="submit">Sign out</button></form>';

/** The minimal page a browser gets for a denial on a sign-in route: status and message from the table. */
export function denialPage(t: SessionCall, code: ErrorCode, cookies: readonly string[], signedIn: boolean, extra: Headers = {}): void {
  const row = ERROR_TABLE[code];
  const title = row.http === 403 ? 'Access denied' : row.http === 401 ? 'Sign-in required' : row.http >= 500 ? 'Temporarily unavailable' : 'Request refused';
  page(
    t,
    row.http,
    `${row.http} ${title}`,
    `<h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(row.message)}.</p>
<p>Reason <code id="reason">${escapeHtml(code)}</code>, decision <code id="decision">${escapeHtml(t.decisionId)}</code>.</p>
${signedIn ? SIGN_OUT_FORM : '<p><a href="/">Back to the start page</a></p>'}`,
    cookies,
    code,
    extra,
  );
}

/**
 * The plain-text denial of `code` (what inbound/respond.ts would write) plus `Set-Cookie`: an API
 * caller that presented a bad session cookie gets the cookie cleared with its 401.
 */
export function textDenial(t: SessionCall, service: string, code: ErrorCode, cookies: readonly string[]): void {
  const row = ERROR_TABLE[code];
  const h: Headers = { 'content-type': TEXT, 'x-ward-reason': code, 'cache-control': 'no-store' };
  // RFC 6750 §3, as inbound/respond.ts challengeFor()
  if (row.challenge !== 'none') h['www-authenticate'] = row.challenge === 'bare' ? `Bearer realm="${service}"` : `Bearer realm="${service}", error="${row.challenge}"`;
  if (cookies.length > 0) h['set-cookie'] = [...cookies];
  writeResponse(t, row.http, h, `${row.message}\n`);
}

export function notFound(t: SessionCall): void {
  writeResponse(t, 404, { 'content-type': TEXT, 'cache-control': 'no-store' }, 'not found\n');
}

export function methodNotAllowed(t: SessionCall, allow: string): void {
  writeResponse(t, 405, { 'content-type': TEXT, allow, 'cache-control': 'no-store' }, 'method not allowed\n');
}
