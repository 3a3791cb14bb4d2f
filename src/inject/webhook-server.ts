import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { loadCertPair, watchCertPair } from '../lib/cert-pair.ts';
import type { Logger } from '../lib/log.ts';
import { reviewAdmission } from './admission.ts';
import type { InjectorSettings } from './settings.ts';

/**
 * `ward injector`'s HTTPS server: POST /inject takes an AdmissionReview, GET /healthz and
 * /readyz answer probes. The API server only talks TLS to webhooks; the certificate and key are
 * files (a Secret mounted by cert-manager or deploy/scripts/webhook-cert.sh) and are re-read
 * when they change, so a rotated certificate needs no restart.
 */

export interface InjectorServerOptions {
  readonly host: string;
  readonly port: number;
  readonly certFile: string;
  readonly keyFile: string;
  readonly settings: InjectorSettings;
  readonly log: Logger;
  /** How often the certificate files are checked for changes. */
  readonly certPollMs?: number;
}

export interface InjectorServer {
  readonly port: number;
  close(): Promise<void>;
}

/** AdmissionReviews are a pod spec plus metadata; the API server caps objects near 3 MiB. */
const MAX_BODY = 6 * 1024 * 1024;
const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;

export async function startInjectorServer(o: InjectorServerOptions): Promise<InjectorServer> {
  const log = o.log;
  const server: Server = createServer({ ...loadCertPair(o.certFile, o.keyFile), minVersion: 'TLSv1.2' }, (req, res) => handle(req, res));
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method === 'GET' && (path === '/healthz' || path === '/readyz')) {
      res.writeHead(200, JSON_HEADERS).end('{"status":"ok"}\n');
      return;
    }
    if (path !== '/inject') {
      res.writeHead(404, JSON_HEADERS).end('{"error":"not found"}\n');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { ...JSON_HEADERS, allow: 'POST' }).end('{"error":"method not allowed"}\n');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      if (refused) return;
      size += c.length;
      if (size > MAX_BODY) {
        refused = true;
        res.writeHead(413, { ...JSON_HEADERS, connection: 'close' }).end('{"error":"request too large"}\n');
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {});
    req.on('end', () => {
      if (refused) return;
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        res.writeHead(400, JSON_HEADERS).end('{"error":"body is not JSON"}\n');
        return;
      }
      let result;
      try {
        result = reviewAdmission(body, o.settings, log);
      } catch (err) {
        // A bug must not take pod creation with it: the API server applies the failurePolicy.
        log.error('admission review failed', { err });
        res.writeHead(500, JSON_HEADERS).end('{"error":"internal error"}\n');
        return;
      }
      res.writeHead(result.status, JSON_HEADERS).end(JSON.stringify(result.body));
    });
  };

  const stopWatching = watchCertPair(o.certFile, o.keyFile, o.certPollMs ?? 10_000, 'certificate', log, (pair) => {
    server.setSecureContext({ ...pair, minVersion: 'TLSv1.2' });
    return true;
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info('injector listening', { host: o.host, port, image: o.settings.image });
  return {
    port,
    close: async () => {
      stopWatching();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}
