import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type RunningSidecar, startSidecar } from '../cli/sidecar.ts';
import { parseSidecarConfig } from '../config/sidecar.ts';
import type { DevIdp } from '../devidp/provider.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The demo's service-to-service chain: client -> orders -> payments -> ledger, three small
 * HTTP apps each behind its own sidecar. The orders and payments apps call onward through their
 * sidecar's egress listener, forwarding the Authorization they received, as an app in a mesh
 * does; the egress exchanges it at the dev IdP (RFC 8693) for a token addressed to the next hop,
 * and each hop's policy conditions on the `act` chain. One more call asks orders' sidecar for a
 * hop its IdP client may not make (orders -> ledger): the IdP refuses it.
 */

export interface ChainRow {
  readonly hop: string;
  /** What the hop saw, or what the caller got. */
  readonly saw: string;
  readonly ok: boolean;
}

interface Seen {
  readonly claims: Record<string, unknown> | null;
  readonly next?: { readonly status: number; readonly reason: string | null; readonly body: unknown } | undefined;
}

function claimsOf(h: string | string[] | undefined): Record<string, unknown> | null {
  return typeof h === 'string' ? (JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>) : null;
}

/** One POST through an egress listener to `destination`, forwarding the caller's Authorization. */
function callOut(agent: http.Agent, egressPort: number, destination: string, path: string, authorization: string | undefined): Promise<NonNullable<Seen['next']>> {
  return new Promise((resolve) => {
    const headers: http.OutgoingHttpHeaders = { host: destination, 'content-length': 0 };
    if (authorization !== undefined) headers.authorization = authorization;
    const req = http.request({ host: '127.0.0.1', port: egressPort, method: 'POST', path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown = null;
        try {
          body = JSON.parse(text);
        } catch {
          // a ward error response is text
        }
        resolve({ status: res.statusCode ?? 0, reason: (res.headers['x-ward-reason'] as string | undefined) ?? null, body });
      });
    });
    req.on('error', (err) => resolve({ status: 0, reason: err.message, body: null }));
    req.end();
  });
}

/** An app that reports the identity it saw and, for `routes[path]`, what its onward call got. */
async function startApp(routes: Readonly<Record<string, { destination: string; path: string }>>, egressPort: () => number): Promise<{ port: number; close(): Promise<void> }> {
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    req.resume();
    const claims = claimsOf(req.headers['x-ward-claims']);
    const onward = routes[req.url ?? ''];
    const reply = (seen: Seen): void => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(seen));
    if (onward === undefined) return reply({ claims });
    void callOut(agent, egressPort(), onward.destination, onward.path, req.headers.authorization).then((next) => reply({ claims, next }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function describeToken(c: Record<string, unknown> | null): string {
  if (c === null) return '(no identity)';
  const actors: string[] = [];
  for (let a = c['act'] as Record<string, unknown> | undefined; a !== undefined && a !== null && typeof a === 'object'; a = a['act'] as Record<string, unknown> | undefined) {
    actors.push(String(a['sub']));
  }
  return `sub ${String(c['sub'])}, aud ${String(c['aud'])}${actors.length === 0 ? '' : `, act ${actors.join(' <- ')}`}`;
}

export interface ChainOptions {
  readonly idp: DevIdp;
  readonly dir: string;
  readonly log: Logger;
  /** Clean-up steps are pushed here (the demo runs them in reverse). */
  readonly cleanups: (() => Promise<void> | void)[];
  /** OTLP/gRPC endpoint the chain's sidecars export their decisions to (the demo's control plane). */
  readonly telemetryEndpoint?: string;
}

export interface Chain {
  readonly rows: readonly ChainRow[];
  readonly ports: { readonly orders: number; readonly payments: number; readonly ledger: number };
}

export async function runChain(o: ChainOptions): Promise<Chain> {
  const { idp, dir } = o;
  const issuer = idp.issuer;
  let egressOrders = 0;
  let egressPayments = 0;

  const ledgerApp = await startApp({}, () => 0);
  o.cleanups.push(() => ledgerApp.close());
  const paymentsApp = await startApp({ '/charge': { destination: 'ledger', path: '/append' } }, () => egressPayments);
  o.cleanups.push(() => paymentsApp.close());
  const ordersApp = await startApp(
    { '/checkout': { destination: 'payments', path: '/charge' }, '/audit': { destination: 'ledger', path: '/append' } },
    () => egressOrders,
  );
  o.cleanups.push(() => ordersApp.close());

  const start = async (service: string, appPort: number, policyRules: string, audience: string, client: string | null, outbound: string): Promise<RunningSidecar> => {
    const secret = client === null ? undefined : idp.config.clients.find((c) => c.clientId === client)?.clientSecret;
    if (secret !== undefined) writeFileSync(join(dir, `${service}-chain.secret`), `${secret}\n`, { mode: 0o600 });
    writeFileSync(
      join(dir, `${service}-chain.policy.yaml`),
      `apiVersion: ward.dev/v1\nkind: Policy\nservice: ${service}\nissuers:\n  - { issuer: "${issuer}", audiences: [${audience}] }\nrules:\n${policyRules}`,
    );
    const yaml = `service: ${service}
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${appPort}", protocol: http1 }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: ${service}-chain.policy.yaml }
${secret === undefined ? '' : `authn:\n  credentials: [{ issuer: "${issuer}", clientId: ${client}, clientSecretFile: ${service}-chain.secret }]\n`}${outbound}${o.telemetryEndpoint === undefined ? '' : `telemetry: { endpoint: "${o.telemetryEndpoint}" }\n`}drainTimeoutMs: 2000
`;
    const file = join(dir, `${service}-chain.sidecar.yaml`);
    writeFileSync(file, yaml);
    const s = await startSidecar(parseSidecarConfig(yaml, file), { log: o.log.child({ demo: `${service}-chain` }), configFile: file });
    o.cleanups.push(() => s.stop());
    return s;
  };

  const ledger = await start(
    'ledger',
    ledgerApp.port,
    `  - name: appends-through-payments-for-orders
    action: allow
    match: { http: [{ methods: [POST], exact: /append }] }
    when:
      - actor: { anyOf: [payments-sidecar] }
      - via: { allOf: [orders-sidecar] }
      - scopes: { allOf: [ledger.append] }
`,
    'urn:ward:ledger',
    null,
    '',
  );
  const payments = await start(
    'payments',
    paymentsApp.port,
    `  - name: charges-through-orders
    action: allow
    match: { http: [{ methods: [POST], exact: /charge }] }
    when:
      - actor: { anyOf: [orders-sidecar] }
      - scopes: { allOf: [payments.charge] }
`,
    'urn:ward:payments',
    'payments-sidecar',
    `outbound:
  listen: { host: 127.0.0.1, port: 0 }
  destinations:
    - { name: ledger, url: "http://127.0.0.1:${ledger.ports.inbound}", protocol: http1, resource: "urn:ward:ledger", scopes: [ledger.append] }
`,
  );
  const orders = await start(
    'orders',
    ordersApp.port,
    `  - name: users
    action: allow
    match: { http: [{ methods: [GET], prefix: / }] }
    when:
      - delegated: false
      - scopes: { allOf: [orders.read] }
`,
    'urn:ward:orders',
    'orders-sidecar',
    `outbound:
  listen: { host: 127.0.0.1, port: 0 }
  destinations:
    - { name: payments, url: "http://127.0.0.1:${payments.ports.inbound}", protocol: http1, resource: "urn:ward:payments", scopes: [payments.charge] }
    # declared, but the IdP does not let orders-sidecar exchange for the ledger
    - { name: ledger, url: "http://127.0.0.1:${ledger.ports.inbound}", protocol: http1, resource: "urn:ward:ledger", scopes: [ledger.append] }
`,
  );
  egressOrders = orders.ports.outbound ?? 0;
  egressPayments = payments.ports.outbound ?? 0;

  const token = await idp.clientCredentialsToken('frontend', 'urn:ward:orders', 'orders.read');
  const agent = new http.Agent({ keepAlive: false });
  const get = (path: string): Promise<Seen | null> =>
    new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: orders.ports.inbound, path, headers: { host: 'orders', authorization: `Bearer ${token}` }, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString()) as Seen);
          } catch {
            resolve(null);
          }
        });
      });
      req.on('error', () => resolve(null));
      req.end();
    });

  const rows: ChainRow[] = [];
  const checkout = await get('/checkout');
  const atPayments = checkout?.next?.body as Seen | undefined;
  const atLedger = atPayments?.next?.body as Seen | undefined;
  const act = (c: Record<string, unknown> | null | undefined): unknown => c?.['act'];
  rows.push({ hop: 'client -> orders', saw: describeToken(checkout?.claims ?? null), ok: checkout?.claims?.['aud'] === 'urn:ward:orders' && act(checkout.claims) === undefined });
  rows.push({
    hop: 'orders -> payments',
    saw: describeToken(atPayments?.claims ?? null),
    ok: atPayments?.claims?.['sub'] === 'frontend' && atPayments.claims['aud'] === 'urn:ward:payments' && JSON.stringify(act(atPayments.claims)) === '{"sub":"orders-sidecar"}',
  });
  rows.push({
    hop: 'payments -> ledger',
    saw: describeToken(atLedger?.claims ?? null),
    ok:
      atLedger?.claims?.['sub'] === 'frontend' &&
      atLedger.claims['aud'] === 'urn:ward:ledger' &&
      JSON.stringify(act(atLedger.claims)) === '{"sub":"payments-sidecar","act":{"sub":"orders-sidecar"}}',
  });
  const audit = await get('/audit');
  rows.push({
    hop: 'orders -> ledger',
    saw: `refused by the IdP: ${audit?.next?.status ?? '-'} ${audit?.next?.reason ?? '-'} (orders-sidecar may not exchange for urn:ward:ledger)`,
    ok: audit?.next?.status === 403 && audit.next.reason === 'ERR_EXCHANGE_REFUSED',
  });
  return { rows, ports: { orders: orders.ports.inbound, payments: payments.ports.inbound, ledger: ledger.ports.inbound } };
}

/** The chain's rows, indented under their heading (the status mark ends each line). */
export function formatChain(rows: readonly ChainRow[]): string {
  const w = Math.max(...rows.map((r) => r.hop.length), 3);
  const s = Math.max(...rows.map((r) => r.saw.length), 28);
  const line = (a: string, b: string, c: string): string => `  ${a.padEnd(w)}  ${b.padEnd(s)}  ${c}`.trimEnd();
  return [line('hop', 'the token the next hop received', ''), line('-'.repeat(w), '-'.repeat(s), ''), ...rows.map((r) => line(r.hop, r.saw, r.ok ? '\u2713' : '\u2717'))].join('\n') + '\n';
}
