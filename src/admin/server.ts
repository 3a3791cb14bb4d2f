import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { http } from '../lib/node-http.ts';
import type { AddressInfo } from 'node:net';

/**
 * The admin listener: `/healthz` (liveness: the process serves requests) and `/readyz`
 * (readiness: policy loaded, every issuer's keys loaded, listeners up, not draining).
 * Kubernetes probes point here; it binds loopback by default and carries no secrets.
 */
export interface ReadinessCheck {
  readonly name: string;
  check(): { ok: boolean; detail?: unknown };
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;

export async function startAdminServer(opts: {
  host: string;
  port: number;
  checks: readonly ReadinessCheck[];
  /** Extra read-only JSON documents, e.g. `/status`. */
  documents?: Readonly<Record<string, () => unknown>>;
  /** Plain-text documents, e.g. `/metrics` (Prometheus exposition format). */
  texts?: Readonly<Record<string, { readonly contentType: string; readonly render: () => string | Promise<string> }>>;
}): Promise<AdminServer> {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const path = url.split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, JSON_HEADERS).end('{"status":"ok"}\n');
      return;
    }
    if (path === '/readyz') {
      const results = opts.checks.map((c) => ({ name: c.name, ...safeCheck(c) }));
      const ready = results.every((r) => r.ok);
      res.writeHead(ready ? 200 : 503, JSON_HEADERS).end(`${JSON.stringify({ ready, checks: results })}\n`);
      return;
    }
    const doc = path === undefined ? undefined : opts.documents?.[path];
    if (doc !== undefined) {
      res.writeHead(200, JSON_HEADERS).end(`${JSON.stringify(doc(), null, 2)}\n`);
      return;
    }
    const text = path === undefined ? undefined : opts.texts?.[path];
    if (text !== undefined) {
      void (async () => {
        try {
          const body = await text.render();
          res.writeHead(200, { 'content-type': text.contentType, 'cache-control': 'no-store' }).end(body);
        } catch (err) {
          res.writeHead(500, JSON_HEADERS).end(`${JSON.stringify({ error: (err as Error).message })}\n`);
        }
      })();
      return;
    }
    res.writeHead(404, JSON_HEADERS).end('{"error":"not found"}\n');
  };
  const server: Server = http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function safeCheck(c: ReadinessCheck): { ok: boolean; detail?: unknown } {
  try {
    return c.check();
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}
