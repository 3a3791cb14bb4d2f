/**
 * What it costs ward's HTTP/2 client to let go of calls waiting for a stream slot: N requests
 * queued behind an app whose SETTINGS_MAX_CONCURRENT_STREAMS (1) is taken by a held call, then
 * cancelled oldest first, as expiring deadlines cancel them, or newest first. Prints the time the
 * cancel loop held the event loop.
 *
 *   node scripts/bench/micro-queue.ts [N, default 20000]
 *
 * Bounded; no assertions: numbers are for humans and for comparing commits.
 */
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { CANCEL, H2Connection, type H2ClientStream, type H2StreamHandler } from '../../src/h2/conn.ts';

const n = Number(process.argv[2] ?? 20_000);

const handler: H2StreamHandler = {
  response: () => {},
  data: (s, chunk) => s.consumed(chunk.length),
  trailers: () => {},
  drain: () => {},
  close: () => {},
};

const server = http2.createServer({ settings: { maxConcurrentStreams: 1 } });
server.on('stream', (stream) => stream.on('error', () => {})); // never answered: the slot stays taken
server.on('session', (s) => s.on('error', () => {}));
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as AddressInfo).port;
const fields = (path: string): string[] => [':method', 'GET', ':scheme', 'http', ':authority', `127.0.0.1:${port}`, ':path', path];

for (const order of ['oldest first', 'newest first'] as const) {
  const conn = new H2Connection({ host: '127.0.0.1', port, handler, connectTimeoutMs: 2000 });
  conn.request(fields('/held'), true, null);
  // the server's SETTINGS (its limit) arrive with the connection
  await new Promise((r) => setTimeout(r, 100));
  const queued: H2ClientStream[] = [];
  for (let i = 0; i < n; i++) queued.push(conn.request(fields(`/q${i}`), true, null));
  if (order === 'newest first') queued.reverse();
  const t = process.hrtime.bigint();
  for (const s of queued) s.reset(CANCEL);
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  console.log(`${n} queued calls cancelled ${order}: ${ms.toFixed(1)} ms (${((ms * 1e6) / n).toFixed(0)} ns per call)`);
  conn.destroy();
}
server.close();
