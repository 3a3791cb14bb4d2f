import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';

/**
 * The app behind the sidecar in the security suites. It records every request the moment its
 * headers arrive (before any body, before any routing), so "the app saw nothing" is the
 * strongest statement available: not one HEADERS frame or request line got through.
 *
 * Behaviour by path:
 *   /slow…      never answers (a slow or hung app)
 *   /big…       200 with 8 MiB of body (a client that does not read it)
 *   /inject…    answers with fields a client might mistake for the sidecar's (x-ward-reason…)
 *   anything    200 `ok <path>`; gRPC calls (content-type application/grpc) get an empty message
 *               and `grpc-status: 0` in trailers
 */

export interface SeenRequest {
  readonly protocol: 'h2' | 'h1';
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Request trailers, once the body ended (undefined until then or when none). */
  trailers: Readonly<Record<string, string | string[] | undefined>> | undefined;
}

export interface RecordingApp {
  readonly port: number;
  readonly protocol: 'h2c' | 'http1';
  readonly seen: SeenRequest[];
  /** Requests whose response is not finished (streams the app holds open). */
  open(): number;
  reset(): void;
  close(): Promise<void>;
}

const GRPC_EMPTY_MESSAGE = Buffer.from([0, 0, 0, 0, 0]);
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
const BIG_CHUNKS = 128; // 8 MiB

/** 8 MiB in 64 KiB chunks, honouring backpressure as a real server does (never buffers it all). */
function writeWithBackpressure(out: NodeJS.WritableStream & { destroyed: boolean; once(e: 'drain', f: () => void): unknown }): void {
  let sent = 0;
  const pump = (): void => {
    while (sent < BIG_CHUNKS && !out.destroyed) {
      sent++;
      if (sent === BIG_CHUNKS) {
        out.end(CHUNK);
        return;
      }
      if (!out.write(CHUNK)) {
        out.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

export async function startRecordingApp(protocol: 'h2c' | 'http1' = 'h2c', port = 0): Promise<RecordingApp> {
  const seen: SeenRequest[] = [];
  let open = 0;
  const sockets = new Set<Socket>();
  const sessions = new Set<http2.Http2Session>();

  let server: http.Server | http2.Http2Server;
  if (protocol === 'h2c') {
    const s = http2.createServer();
    s.on('session', (sess) => {
      sessions.add(sess);
      sess.on('close', () => sessions.delete(sess));
      sess.on('error', () => {});
    });
    s.on('stream', (stream, headers) => {
      const rec: SeenRequest = { protocol: 'h2', method: String(headers[':method']), path: String(headers[':path']), headers: { ...headers }, trailers: undefined };
      seen.push(rec);
      open++;
      stream.on('close', () => open--);
      stream.on('error', () => {});
      stream.on('trailers', (t) => {
        rec.trailers = { ...t };
      });
      stream.resume();
      const path = rec.path;
      const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
      if (path.startsWith('/slow')) return;
      if (path.startsWith('/big')) {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
        writeWithBackpressure(stream);
        return;
      }
      if (path.startsWith('/inject')) {
        stream.respond(
          { ':status': 200, 'content-type': grpc ? 'application/grpc' : 'text/plain', 'x-ward-reason': 'ERR_TOKEN_EXPIRED', 'x-ward-decision-id': 'forged' },
          { waitForTrailers: true },
        );
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-ward-reason': 'ERR_POLICY_DENIED', 'x-ward-subject': 'root' }));
        stream.end(grpc ? GRPC_EMPTY_MESSAGE : 'injected');
        return;
      }
      if (grpc) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(GRPC_EMPTY_MESSAGE);
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end(`ok ${path}`);
    });
    server = s;
  } else {
    const s = http.createServer((req, res) => {
      const rec: SeenRequest = { protocol: 'h1', method: req.method ?? '', path: req.url ?? '', headers: { ...req.headers }, trailers: undefined };
      seen.push(rec);
      open++;
      res.on('close', () => open--);
      req.on('end', () => {
        if (Object.keys(req.trailers).length > 0) rec.trailers = { ...req.trailers };
      });
      req.resume();
      const path = rec.path;
      if (path.startsWith('/slow')) return;
      if (path.startsWith('/big')) {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        writeWithBackpressure(res);
        return;
      }
      if (path.startsWith('/inject')) {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-ward-reason': 'ERR_TOKEN_EXPIRED', 'x-ward-decision-id': 'forged' });
        res.end('injected');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`ok ${path}`);
    });
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    server = s;
  }
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    protocol,
    seen,
    open: () => open,
    reset: () => {
      seen.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
