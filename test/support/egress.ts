import { extractBearer } from '../../src/authn/extract.ts';
import { outboundConfigSchema } from '../../src/config/outbound.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { createOutbound, type Outbound } from '../../src/outbound/server.ts';
import type { OutboundDeps } from '../../src/outbound/types.ts';

/**
 * An egress listener on 127.0.0.1 (an ephemeral port) for `config` (the `outbound:` section,
 * parsed by its schema, `listen` supplied), with the sidecar's usual request settings and a token
 * source that has no token to give unless `over.tokens` says otherwise.
 */
export function startEgress(config: Record<string, unknown>, over: Partial<OutboundDeps> = {}): Promise<Outbound> {
  return createOutbound({
    service: 'orders',
    config: outboundConfigSchema.parse({ listen: { host: '127.0.0.1', port: 0 }, ...config }),
    identityPrefix: 'x-ward-',
    maxTokenBytes: 8192,
    extractBearer,
    tokens: { token: () => ({ ok: false, code: 'ERR_EXCHANGE_UNAVAILABLE', oauthError: null, detail: 'none' }) },
    log: silentLogger,
    clock: Date.now,
    ...over,
  });
}
