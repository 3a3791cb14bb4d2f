import type { OutboundConfig } from '../config/outbound.ts';
import { ConfigError } from '../errors/ward-error.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/log.ts';
import { issueAt, type YamlLocator } from '../lib/yaml-locate.ts';
import { createTokenBroker, type TokenBroker } from './broker.ts';
import { createTokenClient } from './token-client.ts';

/**
 * Builds the token broker of the `outbound` config section at start-up. The workload's client
 * secret comes from `authn.credentials` (a file or an env var, read once by
 * `resolveCredentials`), never from the outbound section or the policy.
 */

export interface WorkloadCredential {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
}

/**
 * The credential the exchange authenticates with: the one for `exchange.issuer`, or the only
 * one. Null when no destination needs a token. A mismatch is a start-up error at
 * `outbound.exchange.issuer` (`locator`, the config's: at its line:column, or where it belongs).
 */
export function selectExchangeCredential(
  outbound: Readonly<OutboundConfig>,
  credentials: readonly WorkloadCredential[],
  configFile: string,
  locator?: YamlLocator,
): WorkloadCredential | null {
  if (outbound.destinations.length === 0) return null;
  const fail = (message: string): never => {
    throw new ConfigError([issueAt(locator, configFile, ['outbound', 'exchange', 'issuer'], message)]);
  };
  const issuer = outbound.exchange.issuer;
  if (issuer === undefined) {
    if (credentials.length === 1) return credentials[0] as WorkloadCredential;
    return fail(
      credentials.length === 0
        ? 'outbound destinations need the workload\'s client credentials: add them under authn.credentials'
        : 'several authn.credentials: name the one to exchange tokens with in outbound.exchange.issuer',
    );
  }
  const found = credentials.find((c) => c.issuer === issuer);
  return found ?? fail(`no authn.credentials entry for issuer ${issuer}`);
}

export function createBrokerFromConfig(
  outbound: Readonly<OutboundConfig>,
  credential: WorkloadCredential,
  opts: { readonly log: Logger; readonly clock: Clock; readonly fetch?: typeof fetch | undefined },
): TokenBroker {
  const x = outbound.exchange;
  const client = createTokenClient({
    issuer: credential.issuer,
    clientId: credential.clientId,
    clientSecret: credential.clientSecret,
    tokenEndpoint: x.tokenEndpoint,
    clientAuth: x.clientAuth,
    timeoutMs: x.timeoutMs,
    fetch: opts.fetch,
  });
  return createTokenBroker({
    client,
    cacheEntries: x.cacheEntries,
    renewBeforeMs: x.renewBeforeSeconds * 1000,
    refusalCacheMs: x.refusalCacheSeconds * 1000,
    retry: { initialMs: x.retryInitialMs, maxMs: x.retryMaxMs },
    clock: opts.clock,
    log: opts.log,
  });
}
