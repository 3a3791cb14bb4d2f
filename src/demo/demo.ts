import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parseSidecarConfig } from '../config/sidecar.ts';
import { defaultDevIdpConfig } from '../devidp/config.ts';
import { type DevIdp, startDevIdp } from '../devidp/provider.ts';
import type { ErrorCode } from '../errors/codes.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { ordersClientConstructor, type OrdersApp, startOrdersApp } from './orders-app.ts';

/**
 * `ward demo`: the dev IdP, the Orders gRPC app, a sidecar in front of it, and a client that
 * makes allowed and denied calls, printed as a table. Every row states what should happen; with
 * `--once` the exit code says whether everything did.
 *
 * The sidecar config and policy are written at run time (the IdP's port is dynamic and the
 * policy names the issuer URL). `deploy/examples/` holds the same files rendered for the fixed
 * ports of the README; a test checks that they match `demoFiles()`.
 */

export const DEMO_SERVICE = 'orders';
export const DEMO_AUDIENCE = 'urn:ward:orders';
export const DEMO_OPAQUE_AUDIENCE = 'urn:ward:orders-opaque';
const SIDECAR_CLIENT = 'orders-sidecar';
const SECRET_FILE = 'orders-sidecar.secret';

export interface DemoFiles {
  readonly 'orders.policy.yaml': string;
  readonly 'sidecar.yaml': string;
}

/** The demo's policy and sidecar config for an IdP at `issuer` and the app at `appPort`. */
export function demoFiles(p: {
  issuer: string;
  appPort: number;
  inboundPort: number;
  adminPort: number;
  jwksCooldownMs?: number;
  /** Take the policy from this control plane instead of the file (the `ward demo` mesh). */
  controlPlane?: { address: string; stateDir: string };
}): DemoFiles {
  const policy = `# The demo policy of the orders service (ward demo). Reference: docs/policy.md
apiVersion: ward.dev/v1
kind: Policy
service: ${DEMO_SERVICE}
issuers:
  # the dev IdP (ward dev-idp); opaque tokens are checked by RFC 7662 introspection
  # with the sidecar's own client (authn.credentials in sidecar.yaml)
  - issuer: ${p.issuer}
    audiences: [${DEMO_AUDIENCE}, ${DEMO_OPAQUE_AUDIENCE}]
    algorithms: [RS256, ES256]
    introspection: true
rules:
  # deny rules are checked first: nobody deletes orders, whatever their scopes
  - name: no-deletes
    action: deny
    match:
      grpc: [/ward.demo.v1.Orders/DeleteOrder]
  - name: readers
    description: Anyone with orders.read may read orders.
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder, /ward.demo.v1.Orders/ListOrders]
    when:
      - scopes: { allOf: [orders.read] }
  - name: writers
    description: Creating orders needs orders.write.
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/CreateOrder, /ward.demo.v1.Orders/UploadOrders]
    when:
      - scopes: { allOf: [orders.write] }
`;
  const sidecar = `# The sidecar of the orders service (ward demo). Reference: docs/sidecar-config.md
service: ${DEMO_SERVICE}
inbound:
  listen: { host: 127.0.0.1, port: ${p.inboundPort} }
upstream:
  url: http://127.0.0.1:${p.appPort}
  protocol: h2c
policy:
${p.controlPlane === undefined ? '  file: orders.policy.yaml' : `  # from the control plane (ward control-plane), authenticated with the client below
  controlPlane: { address: "${p.controlPlane.address}", stateDir: "${p.controlPlane.stateDir}", issuer: "${p.issuer}" }`}
admin: { host: 127.0.0.1, port: ${p.adminPort} }
authn:${p.jwksCooldownMs === undefined ? '' : `
  # the demo rotates the IdP's key and expects the very next token to pass: refetch at once
  jwks: { cooldownMs: ${p.jwksCooldownMs} }`}
  credentials:
    # the sidecar's own client at the dev IdP, for introspecting opaque tokens
    - issuer: ${p.issuer}
      clientId: ${SIDECAR_CLIENT}
      clientSecretFile: ${SECRET_FILE}
drainTimeoutMs: 2000   # a demo: stop quickly
`;
  return { 'orders.policy.yaml': policy, 'sidecar.yaml': sidecar };
}

/** The values `deploy/examples/` is rendered with (the README's fixed ports). */
/** The rule the demo adds through the control plane to show a policy edit taking effect. */
const FREEZE_REPORTING = `  # added by the demo through the control plane: reporting may no longer read
  - name: freeze-reporting
    action: deny
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
    when:
      - subject: { in: [reporting] }
`;

export const EXAMPLE_PORTS = { issuer: 'http://127.0.0.1:4400', appPort: 8080, inboundPort: 15006, adminPort: 15000 } as const;

type StatusName = 'OK' | 'PERMISSION_DENIED' | 'UNAUTHENTICATED';

interface Scenario {
  readonly caller: string;
  readonly method: 'GetOrder' | 'CreateOrder' | 'DeleteOrder';
  readonly token: string | undefined;
  readonly expect: StatusName;
  readonly reason?: ErrorCode;
}

export interface DemoRow {
  readonly caller: string;
  readonly method: string;
  readonly expected: string;
  readonly got: string;
  readonly reason: string;
  readonly decisionId: string;
  readonly reachedApp: boolean;
  readonly ok: boolean;
}

interface CallResult {
  readonly code: number;
  readonly reason: string | undefined;
  readonly decisionId: string | undefined;
}

const STATUS_NAMES = new Map<number, string>(
  Object.entries(grpc.status)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([name, code]) => [code, name]),
);

function first(md: grpc.Metadata | undefined, key: string): string | undefined {
  const v = md?.get(key)[0];
  return typeof v === 'string' ? v : undefined;
}

/** One unary call; resolves (never rejects) once both the response and the status are in. */
function callOrders(client: grpc.Client, method: Scenario['method'], token: string | undefined): Promise<CallResult> {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  const request = method === 'CreateOrder' ? { id: 'o-2', item: 'gizmo', quantity: 2 } : { id: 'o-1' };
  const fn = (client as unknown as Record<string, (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall>)[method];
  if (fn === undefined) throw new Error(`no method ${method}`);
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    let pending = 2;
    let result: { code: number; trailers: grpc.Metadata | undefined } = { code: grpc.status.UNKNOWN, trailers: undefined };
    const done = (): void => {
      if (--pending > 0) return;
      const look = (k: string): string | undefined => first(result.trailers, k) ?? first(headers, k);
      resolve({ code: result.code, reason: look('x-ward-reason'), decisionId: look('x-ward-decision-id') });
    };
    const call = fn.call(client, request, md, { deadline: Date.now() + 5000 }, (err) => {
      if (err !== null) result = { code: err.code, trailers: err.metadata };
      done();
    });
    call.on('metadata', (m: grpc.Metadata) => {
      headers = m;
    });
    call.on('status', (s: grpc.StatusObject) => {
      result = { code: s.code, trailers: s.metadata };
      done();
    });
  });
}

/** A token the IdP's key signs but that expired five minutes ago. */
async function expiredToken(idp: DevIdp): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return idp.signToken({
    iss: idp.issuer,
    sub: 'frontend',
    client_id: 'frontend',
    aud: DEMO_AUDIENCE,
    scope: 'orders.read',
    iat: now - 600,
    exp: now - 300,
    jti: `demo-expired-${now}`,
  });
}

/** The same token with `scope` widened in the payload: the signature no longer matches. */
function tampered(token: string): string {
  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p ?? '', 'base64url').toString()) as Record<string, unknown>;
  claims['scope'] = 'orders.read orders.write orders.admin';
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}

export function formatTable(rows: readonly DemoRow[]): string {
  const head = ['', 'caller', 'method', 'expected', 'got', 'reason', 'app', 'decision'];
  const cells = rows.map((r) => [r.ok ? '\u2713' : '\u2717', r.caller, r.method, r.expected, r.got, r.reason, r.reachedApp ? 'reached' : '-', r.decisionId]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: readonly string[]): string => c.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}

async function waitReady(ready: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Waits for SIGINT/SIGTERM (or `signal`), calling `tick` every half second meanwhile. */
function untilSignal(signal: AbortSignal | undefined, tick: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void tick().finally(() => (busy = false));
    }, 500);
    const stop = (): void => {
      clearInterval(timer);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      signal?.removeEventListener('abort', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    if (signal?.aborted === true) stop();
    else signal?.addEventListener('abort', stop);
  });
}

export async function runDemo(opts: {
  once: boolean;
  log?: Logger;
  out?: NodeJS.WritableStream;
  /** Stops a non-`once` demo besides SIGINT/SIGTERM (tests). */
  signal?: AbortSignal;
}): Promise<number> {
  const log = opts.log ?? createLogger({ level: 'warn' });
  const out = opts.out ?? process.stdout;
  const print = (s: string): void => void out.write(s);
  const dir = mkdtempSync(join(tmpdir(), 'ward-demo-'));
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        log.warn('demo clean-up step failed', { err });
      }
    }
  };

  try {
    // the demo's identities plus the web app's client and users (browser sign-in, below)
    const idp = await startDevIdp({ ...defaultDevIdpConfig(), port: 0 }, { log: log.child({ demo: 'idp' }) });
    cleanups.push(() => idp.close());
    const app: OrdersApp = await startOrdersApp();
    cleanups.push(() => app.close());

    // The control plane serves the orders policy to the sidecar and collects every decision.
    const { startDemoControlPlane } = await import('./control-plane.ts');
    const cp = await startDemoControlPlane({ issuer: idp.issuer, dir, log: log.child({ demo: 'control-plane' }) });
    cleanups.push(() => cp.close());
    const files = demoFiles({
      issuer: idp.issuer,
      appPort: app.port,
      inboundPort: 0,
      adminPort: 0,
      jwksCooldownMs: 0,
      controlPlane: { address: cp.address, stateDir: join(dir, 'state') },
    });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    cp.publish('orders.yaml', files['orders.policy.yaml']);
    const secret = idp.config.clients.find((c) => c.clientId === SIDECAR_CLIENT)?.clientSecret ?? '';
    writeFileSync(join(dir, SECRET_FILE), `${secret}\n`, { mode: 0o600 });
    const sidecarFile = join(dir, 'sidecar.yaml');
    const cfg = parseSidecarConfig(files['sidecar.yaml'], sidecarFile);
    // loaded here, not at the top, so demoFiles() is importable without the whole proxy
    const { startSidecar } = await import('../cli/sidecar.ts');
    const sidecar = await startSidecar(cfg, { log: log.child({ demo: 'sidecar' }), configFile: sidecarFile });
    cleanups.push(() => sidecar.stop());
    if (!(await waitReady(() => sidecar.ready(), 10_000))) log.warn('sidecar not ready after 10 s; calling anyway');

    const Client = ordersClientConstructor();
    const client = new Client(`127.0.0.1:${sidecar.ports.inbound}`, grpc.credentials.createInsecure());
    cleanups.push(() => client.close());

    const frontend = await idp.clientCredentialsToken('frontend', DEMO_AUDIENCE, 'orders.read orders.write');
    // reporting asks for orders.write too, but the IdP grants it orders.read only
    const reporting = await idp.clientCredentialsToken('reporting', DEMO_AUDIENCE, 'orders.read orders.write');
    const scenarios: Scenario[] = [
      { caller: 'frontend', method: 'GetOrder', token: frontend, expect: 'OK' },
      { caller: 'frontend', method: 'CreateOrder', token: frontend, expect: 'OK' },
      { caller: 'reporting', method: 'GetOrder', token: reporting, expect: 'OK' },
      { caller: 'reporting', method: 'CreateOrder', token: reporting, expect: 'PERMISSION_DENIED', reason: 'ERR_SCOPE_INSUFFICIENT' },
      { caller: 'frontend', method: 'DeleteOrder', token: frontend, expect: 'PERMISSION_DENIED', reason: 'ERR_POLICY_DENIED' },
      { caller: '(no token)', method: 'GetOrder', token: undefined, expect: 'UNAUTHENTICATED', reason: 'ERR_TOKEN_MISSING' },
      { caller: 'intruder (aud other)', method: 'GetOrder', token: await idp.clientCredentialsToken('intruder', 'urn:ward:other', 'other.read'), expect: 'UNAUTHENTICATED', reason: 'ERR_TOKEN_AUDIENCE' },
      { caller: 'frontend (expired)', method: 'GetOrder', token: await expiredToken(idp), expect: 'UNAUTHENTICATED', reason: 'ERR_TOKEN_EXPIRED' },
      { caller: 'frontend (tampered)', method: 'GetOrder', token: tampered(frontend), expect: 'UNAUTHENTICATED', reason: 'ERR_TOKEN_SIGNATURE' },
      { caller: 'frontend (opaque)', method: 'GetOrder', token: await idp.clientCredentialsToken('frontend', DEMO_OPAQUE_AUDIENCE, 'orders.read'), expect: 'OK' },
    ];

    const rows: DemoRow[] = [];
    const run = async (s: Scenario): Promise<void> => {
      const before = app.calls.length;
      const r = await callOrders(client, s.method, s.token);
      const reached = app.calls.length > before;
      const got = STATUS_NAMES.get(r.code) ?? String(r.code);
      // an allowed call's decision id is also in the identity headers the app received
      const decisionId = r.decisionId ?? (reached ? app.calls[app.calls.length - 1]?.metadata['x-ward-decision-id'] : undefined);
      const ok = got === s.expect && (s.reason === undefined || r.reason === s.reason) && reached === (s.expect === 'OK');
      rows.push({
        caller: s.caller,
        method: s.method,
        expected: s.reason === undefined ? s.expect : `${s.expect} ${s.reason}`,
        got,
        reason: r.reason ?? '-',
        decisionId: decisionId ?? '-',
        reachedApp: reached,
        ok,
      });
    };
    for (const s of scenarios) await run(s);
    // last: the IdP rotates its key; the sidecar meets an unknown kid and refetches the JWKS
    await idp.rotateKeys();
    await run({ caller: 'frontend (new key)', method: 'GetOrder', token: await idp.clientCredentialsToken('frontend', DEMO_AUDIENCE, 'orders.read'), expect: 'OK' });

    print(`\nward demo: ${DEMO_SERVICE} service behind a sidecar, policy from the control plane (${cp.address}), tokens from the dev IdP (${idp.issuer})\n\n`);
    print(formatTable(rows));
    const failed = rows.filter((r) => !r.ok).length;
    print(failed === 0 ? `\nall ${rows.length} calls went as expected\n` : `\n${failed} of ${rows.length} calls did NOT go as expected\n`);

    // A policy edit published through the control plane reaches the sidecar (and its open
    // connection) within a second: reporting may no longer read.
    const before = sidecar.policyVersion();
    cp.publish('orders.yaml', files['orders.policy.yaml'].replace('rules:\n', `rules:\n${FREEZE_REPORTING}`));
    const applied = await waitReady(() => sidecar.policyVersion() !== before, 5000);
    const editRows: DemoRow[] = [];
    const editRun = rows.length;
    await run({ caller: 'reporting (after edit)', method: 'GetOrder', token: reporting, expect: 'PERMISSION_DENIED', reason: 'ERR_POLICY_DENIED' });
    editRows.push(...rows.splice(editRun));
    print(`\nPolicy edit published through the control plane (version ${(before ?? '-').slice(0, 12)} -> ${applied ? (sidecar.policyVersion() ?? '-').slice(0, 12) : 'NOT APPLIED'}):\n\n`);
    print(formatTable(editRows));
    const editFailed = editRows.filter((r) => !r.ok).length + (applied ? 0 : 1);
    cp.publish('orders.yaml', files['orders.policy.yaml']);

    // Service to service: a token exchanged at every hop (RFC 8693), docs/outbound.md
    const { runChain, formatChain } = await import('./chain.ts');
    const chain = await runChain({ idp, dir, log, cleanups, telemetryEndpoint: cp.address });
    print('\nService to service: client -> orders -> payments -> ledger, each hop through its sidecar\'s egress (RFC 8693 token exchange)\n\n');
    print(formatChain(chain.rows));
    const chainFailed = chain.rows.filter((r) => !r.ok).length;
    print(chainFailed === 0 ? '\nthe chain went as expected\n' : `\n${chainFailed} of ${chain.rows.length} chain hops did NOT go as expected\n`);

    // Browser sign-in (docs/browser-sign-in.md): a web app behind a sidecar that signs people in
    // at the dev IdP; here the requests a browser makes, scripted (the tests use a real Chromium).
    const web = await import('./webapp.ts');
    const webApp = await web.startWebApp();
    cleanups.push(() => webApp.close());
    const webSidecar = await web.startWebSidecar({ idp, dir, appPort: webApp.port, log: log.child({ demo: 'web-sidecar' }) });
    cleanups.push(() => webSidecar.stop());
    if (!(await waitReady(() => webSidecar.ready(), 10_000))) log.warn('web sidecar not ready after 10 s; going on');
    const webUrl = `http://127.0.0.1:${webSidecar.ports.inbound}/`;
    const webRows = await web.runWebChecks(webUrl, webApp);
    print(`\nBrowser sign-in: a web app behind a sidecar that signs people in at the dev IdP (${webUrl})\n\n`);
    print(web.formatWebRows(webRows));
    const webFailed = webRows.filter((r) => !r.ok).length;
    print(webFailed === 0 ? '\nbrowser sign-in went as expected\n' : `\n${webFailed} of ${webRows.length} browser sign-in steps did NOT go as expected\n`);

    // The decision trail, as `ward decisions` shows it: every call above, from the control plane.
    const { formatDecision, formatHeader } = await import('../cli/decisions.ts');
    const expected = rows.length + editRows.length + chain.rows.length;
    let trail = await cp.decisions(200);
    // Each sidecar exports its decisions in batches, within a second of the call (and the chain
    // makes more decisions than it has rows): wait for at least one per call, then until none
    // has arrived for longer than one export period.
    let quietSince = Date.now();
    for (let i = 0; i < 80; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const next = await cp.decisions(200);
      if (next.length !== trail.length) quietSince = Date.now();
      trail = next;
      if (trail.length >= expected && Date.now() - quietSince >= 1200) break;
    }
    print(`\nDecision trail from the control plane (ward decisions --address ${cp.address}):\n\n`);
    print(`${formatHeader()}\n${trail.map((e) => formatDecision(e)).join('\n')}\n`);

    if (!opts.once) {
      print(`
The mesh keeps running; Ctrl-C stops it.
  dev IdP   ${idp.issuer}   (development only)
  sidecar   127.0.0.1:${sidecar.ports.inbound} -> app 127.0.0.1:${app.port}
  admin     http://127.0.0.1:${sidecar.ports.admin}/readyz
  control   ${cp.address}   (npx ward status --address ${cp.address}; npx ward decisions --address ${cp.address} -f)
  web app   ${webUrl}   (open it in a browser; sign in as alice / alice-password or bob / bob-password)
  files     ${dir}

Edit ${join(cp.policyDir, 'orders.yaml')} and save: the control plane pushes the new version to
the sidecar and the calls above are made again with the decisions it now takes.

Try a call yourself:
  TOKEN=$(curl -s -u frontend:frontend-secret -d grant_type=client_credentials \\
      -d resource=${DEMO_AUDIENCE} -d scope=orders.read ${idp.tokenEndpoint} | jq -r .access_token)
  grpcurl -plaintext -import-path proto -proto ward/demo/v1/orders.proto \\
      -H "authorization: Bearer $TOKEN" -d '{"id":"1"}' 127.0.0.1:${sidecar.ports.inbound} ward.demo.v1.Orders/GetOrder
`);
      let shown = sidecar.policyVersion();
      await untilSignal(opts.signal, async () => {
        // Re-run the calls whenever a new policy version is in force.
        const v = sidecar.policyVersion();
        if (v === shown) return;
        shown = v;
        const start = rows.length;
        for (const s of scenarios) await run(s);
        const again = rows.splice(start).map((r) => ({ ...r, ok: true }));
        print(`\nPolicy version ${(v ?? '-').slice(0, 12)} is in force; the same calls now:\n\n${formatTable(again)}`);
      });
    }
    return failed === 0 && chainFailed === 0 && editFailed === 0 && webFailed === 0 ? 0 : 1;
  } finally {
    await cleanup();
  }
}
