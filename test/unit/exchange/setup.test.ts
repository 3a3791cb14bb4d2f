import { describe, expect, it } from 'vitest';
import { outboundConfigSchema } from '../../../src/config/outbound.ts';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { selectExchangeCredential } from '../../../src/exchange/setup.ts';

const A = { issuer: 'https://a.test', clientId: 'orders-sidecar', clientSecret: 's1' };
const B = { issuer: 'https://b.test', clientId: 'orders', clientSecret: 's2' };
const withDest = (exchange: Record<string, unknown> = {}) =>
  outboundConfigSchema.parse({ exchange, destinations: [{ name: 'payments', url: 'http://x:1', resource: 'urn:ward:payments' }] });

describe('selectExchangeCredential', () => {
  it('takes the only credential, or the one named by exchange.issuer', () => {
    expect(selectExchangeCredential(withDest(), [A], 'sidecar.yaml')).toBe(A);
    expect(selectExchangeCredential(withDest({ issuer: 'https://b.test' }), [A, B], 'sidecar.yaml')).toBe(B);
  });

  it('needs none without destinations', () => {
    expect(selectExchangeCredential(outboundConfigSchema.parse({ passthrough: true }), [], 'sidecar.yaml')).toBeNull();
  });

  it('fails at start-up, naming the field, when it cannot choose', () => {
    for (const [cfg, creds, msg] of [
      [withDest(), [], 'add them under authn.credentials'],
      [withDest(), [A, B], 'name the one'],
      [withDest({ issuer: 'https://c.test' }), [A, B], 'no authn.credentials entry for issuer https://c.test'],
    ] as const) {
      let err: unknown;
      try {
        selectExchangeCredential(cfg, creds, 'sidecar.yaml');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]).toMatchObject({ file: 'sidecar.yaml', path: 'outbound.exchange.issuer' });
      expect((err as ConfigError).issues[0]?.message).toContain(msg);
    }
  });
});
