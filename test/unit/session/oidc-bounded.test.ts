import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/lib/log.ts';
import { createSignInClient } from '../../../src/session/oidc.ts';

/**
 * Regression: the sign-in client's IdP responses are size-capped like every other IdP fetch
 * (authn/fetch.ts boundedFetch). Before the fix, a discovery document streamed without end was
 * buffered until the timeout. Here the endpoint streams forever; the client must answer
 * `unavailable` well before it could have buffered what the server sent.
 */
describe('sign-in client against an IdP that streams without end', () => {
  let server: Server;
  let sent = 0;
  let issuer = '';
  beforeAll(async () => {
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (res.write(chunk)) {
          sent += chunk.length;
          if (sent > 256 * 1024 * 1024) return void res.end();
        }
        res.once('drain', pump);
      };
      res.write('{"issuer":"');
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('gives up as soon as the body exceeds the cap', async () => {
    const client = createSignInClient({
      issuer,
      clientId: 'webapp',
      clientSecret: 'webapp-secret',
      scopes: ['openid'],
      resource: undefined,
      timeoutMs: 30_000,
      log: silentLogger,
      clock: Date.now,
    });
    const r = await client.authorizationUrl({ redirectUri: 'http://127.0.0.1/.ward/callback', state: 's', nonce: 'n', codeVerifier: 'v'.repeat(43) });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.failure, JSON.stringify(r.failure)).toMatchObject({ kind: 'unavailable' });
    // far less than the 256 MiB the server would stream before ending on its own
    expect(sent).toBeLessThan(64 * 1024 * 1024);
  });
});
