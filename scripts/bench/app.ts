/**
 * Fallback app for the load benchmark (`npm run bench -- --app node`), when nghttpd (Debian
 * `nghttp2-server`) is not installed: a bare `node:http2` server answering every POST with a
 * fixed gRPC response (one ~1 KiB message, `grpc-status: 0` in trailers) and every GET with a
 * fixed 1 KiB JSON body. It costs ~30 µs of CPU per call itself, so nghttpd (C) is preferred:
 * the "direct" scenario is meant to be the physical limit, not a second Node process.
 *
 *   npx node scripts/bench/app.ts --port 18000
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { parseArgs } from 'node:util';
import { grpcFrame, jsonBody } from './payloads.ts';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
const GRPC = grpcFrame(1021);
const JSON_BODY = jsonBody(1024);
const GRPC_HEADERS = { ':status': 200, 'content-type': 'application/grpc' };
const JSON_HEADERS = { ':status': 200, 'content-type': 'application/json', 'content-length': JSON_BODY.length };
const TRAILERS = { 'grpc-status': '0' };
const WITH_TRAILERS = { waitForTrailers: true };

function onWantTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(TRAILERS);
}

const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
  if (headers[':method'] === 'POST') {
    stream.resume();
    stream.on('wantTrailers', onWantTrailers);
    stream.respond(GRPC_HEADERS, WITH_TRAILERS);
    stream.end(GRPC);
  } else {
    stream.respond(JSON_HEADERS);
    stream.end(JSON_BODY);
  }
});
server.listen(Number(values.port ?? 0), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
