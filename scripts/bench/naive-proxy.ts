/**
 * The naive peer of the load benchmark (BENCHMARKS.md): the HTTP/2 JWT proxy most people would
 * write first with `node:http2` and jose. Every stream: take the bearer token, `jwtVerify` it
 * (RS256 via a remote JWKS, keys cached by jose), check the scope, then open a stream to the app
 * on one shared h2c session, pipe the body both ways and relay the trailers.
 *
 * It is deliberately plain, not deliberately slow: no per-request connection, no logging, no
 * verified-token cache (jose does not offer one), no header hygiene, no policy engine.
 *
 *   npx node scripts/bench/naive-proxy.ts --port 18001 --app http://127.0.0.1:18000 \
 *     --jwks http://127.0.0.1:18002/jwks --issuer http://127.0.0.1:18002 --audience urn:ward:bench --scope bench.call
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { parseArgs } from 'node:util';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    app: { type: 'string' },
    jwks: { type: 'string' },
    issuer: { type: 'string' },
    audience: { type: 'string' },
    scope: { type: 'string' },
  },
});
const { port, app, jwks, issuer, audience, scope } = values;
if (port === undefined || app === undefined || jwks === undefined || issuer === undefined || audience === undefined || scope === undefined) {
  console.error('usage: naive-proxy.ts --port P --app URL --jwks URL --issuer ISS --audience AUD --scope SCOPE');
  process.exit(2);
}

const keys = createRemoteJWKSet(new URL(jwks));
let upstream = http2.connect(app);
upstream.on('error', () => {});
upstream.on('close', () => {
  upstream = http2.connect(app);
  upstream.on('error', () => {});
});

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host', 'authorization']);

function deny(stream: ServerHttp2Stream, grpc: boolean): void {
  if (grpc) stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': 16 }, { endStream: true });
  else stream.respond({ ':status': 401 }, { endStream: true });
}

const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', async (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
  const grpc = (headers['content-type'] ?? '').startsWith('application/grpc');
  const auth = headers.authorization;
  if (auth === undefined || !auth.startsWith('Bearer ')) return deny(stream, grpc);
  try {
    const { payload } = await jwtVerify(auth.slice(7), keys, { issuer, audience, algorithms: ['RS256'] });
    if (typeof payload['scope'] !== 'string' || !payload['scope'].split(' ').includes(scope)) return deny(stream, grpc);
  } catch {
    return deny(stream, grpc);
  }
  if (stream.destroyed) return;

  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP.has(k)) continue;
    out[k] = v;
  }
  const req = upstream.request(out);
  let trailers: IncomingHttpHeaders = {};
  req.on('response', (h) => {
    const { ':status': status, ...rest } = h;
    stream.respond({ ':status': status ?? 502, ...rest }, { waitForTrailers: true });
    req.pipe(stream);
  });
  req.on('trailers', (t) => {
    trailers = t;
  });
  stream.on('wantTrailers', () => stream.sendTrailers(trailers));
  req.on('error', () => {
    if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 502 }, { endStream: true });
  });
  stream.on('close', () => {
    if (!req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL);
  });
  stream.pipe(req);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`naive proxy on ${port}`));
process.on('SIGTERM', () => process.exit(0));
