import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import type { DevIdpUser } from './config.ts';

/**
 * The dev IdP's login page: oidc-provider hands every interaction (here, always `login`) to
 * `/interaction/<uid>`, where a form takes a username and password of the config's fixed users
 * and `interactionFinished` resumes the authorization. oidc-provider's own `devInteractions`
 * accepts any username with any password; a page that knows the users is closer to a real IdP
 * (a wrong password is refused) and lets tests sign in as someone in particular.
 *
 * Development only, like everything in this IdP: the users and their passwords are public and
 * listed on the page itself.
 */

export const INTERACTION_PATH = '/interaction/';
const MAX_FORM_BYTES = 8 * 1024;
const NOTICE = 'DEVELOPMENT ONLY: ward dev-idp. These users and passwords are public.';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const HTML_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // the page needs no script and loads nothing (no `form-action`: the login's redirects go on to the client)
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
} as const;

function loginPage(uid: string, clientId: string, users: ReadonlyMap<string, DevIdpUser>, error: string | null, username: string): string {
  const list = [...users.values()]
    .map((u) => `<li><code>${escapeHtml(u.username)}</code> / <code>${escapeHtml(u.password)}</code></li>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - ward dev-idp</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}.dev{background:#fee;border:1px solid #c00;padding:.5em}label{display:block;margin:.5em 0}</style></head>
<body>
<p class="dev"><strong>${escapeHtml(NOTICE)}</strong></p>
<h1>Sign in</h1>
<p>to <code>${escapeHtml(clientId)}</code></p>
${error === null ? '' : `<p role="alert" id="error">${escapeHtml(error)}</p>`}
<form method="post" action="${INTERACTION_PATH}${encodeURIComponent(uid)}">
<label>Username <input name="username" autocomplete="username" value="${escapeHtml(username)}" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
<h2>Test users</h2><ul>${list}</ul>
</body></html>`;
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | null> {
  const type = req.headers['content-type'] ?? '';
  if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) return null;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > MAX_FORM_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `GET|POST /interaction/<uid>`. Rejects (the caller answers 500) only on unexpected errors. */
export async function handleInteraction(
  provider: Provider,
  users: ReadonlyMap<string, DevIdpUser>,
  resources: ReadonlyMap<string, Readonly<Record<string, readonly string[]>>>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const uid = decodeURIComponent((req.url ?? '').slice(INTERACTION_PATH.length).split('?')[0] ?? '');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    // no interaction cookie, or an expired one: the browser must start over at the client
    res.writeHead(400, HTML_HEADERS).end(`<!doctype html><title>Sign-in expired</title><p>This sign-in has expired or is unknown. Go back to the application and try again.</p>`);
    return;
  }
  if (details.uid !== uid) {
    res.writeHead(400, HTML_HEADERS).end('<!doctype html><title>Bad request</title><p>Interaction mismatch.</p>');
    return;
  }
  const cid = details.params['client_id'];
  const clientId = typeof cid === 'string' ? cid : '';
  if (details.prompt.name === 'consent') {
    // First-party clients only in this IdP: consent is given for what the client may get.
    // (oidc-provider asks for it on every sign-in of a native client, RFC 8252 §8.6.)
    const accountId = details.session?.accountId;
    if (accountId === undefined) {
      res.writeHead(400, HTML_HEADERS).end('<!doctype html><title>Bad request</title><p>No signed-in user.</p>');
      return;
    }
    const grantId = await firstPartyGrant(provider, clientId, accountId, resources.get(clientId) ?? {}, details.grantId);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, HTML_HEADERS).end(loginPage(uid, clientId, users, null, ''));
    return;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
    return;
  }
  const form = await readForm(req);
  const username = form?.get('username') ?? '';
  const password = form?.get('password') ?? '';
  const user = users.get(username);
  // one comparison whether or not the user exists, so the page does not tell which names exist by timing
  const ok = sameSecret(password, user?.password ?? '\u0000never a password') && user !== undefined;
  if (!ok) {
    res.writeHead(401, HTML_HEADERS).end(loginPage(uid, clientId, users, 'Unknown user or wrong password.', username));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
}

/**
 * The grant of a first-party client for a user: the existing one, or a new one with the OIDC
 * scopes and every resource scope the client may receive (the config's `resources`).
 */
export async function firstPartyGrant(
  provider: Provider,
  clientId: string,
  accountId: string,
  resources: Readonly<Record<string, readonly string[]>>,
  existing: string | undefined,
): Promise<string> {
  if (existing !== undefined) {
    const g = await provider.Grant.find(existing);
    if (g !== undefined && g.accountId === accountId && g.clientId === clientId) return existing;
  }
  const grant = new provider.Grant({ clientId, accountId });
  grant.addOIDCScope('openid profile offline_access');
  grant.addOIDCClaims(['sub', 'name', 'email']);
  for (const [resource, scopes] of Object.entries(resources)) grant.addResourceScope(resource, scopes.join(' '));
  return grant.save();
}

/** RP-initiated logout: signs out at once (dev IdP: no confirmation click), with a button for no-script browsers. */
export function logoutSource(ctx: KoaContextWithOIDC, form: string): void {
  ctx.type = 'html';
  ctx.body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signing out - ward dev-idp</title></head>
<body>
<p><strong>${escapeHtml(NOTICE)}</strong></p>
<p>Signing you out&hellip;</p>
${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>
<script>(function(){var f=document.getElementById('op.logoutForm');var i=document.createElement('input');i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();})();</script>
</body></html>`;
}

export function postLogoutSuccessSource(ctx: KoaContextWithOIDC): void {
  ctx.type = 'html';
  ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signed out - ward dev-idp</title></head><body><p>You are signed out of the ward dev-idp.</p></body></html>`;
}
