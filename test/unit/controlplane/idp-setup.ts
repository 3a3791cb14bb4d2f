import { createAuthenticator, type Authenticator } from '../../../src/authn/authenticator.ts';
import { type ControlPlaneConfig, trustedIssuers } from '../../../src/controlplane/server/config.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import type { startTestIdp } from '../../support/idp.ts';

/**
 * Dev-IdP and control-plane config for the control-plane integration tests
 * (test/integration/controlplane-*.test.ts): sidecars get client-credentials tokens for the
 * control plane's own audience, as they would from a real IdP.
 */

export const CP_AUDIENCE = 'urn:ward:control-plane';

/**
 * Dev-IdP overrides for the control-plane tests. The embedded default config already has the
 * control-plane resource and client_credentials for the two sidecar clients, so none are needed;
 * kept as the one place to change should the tests need more.
 */
export function idpWithControlPlane(): Parameters<typeof startTestIdp>[0] {
  return {};
}

export function controlPlaneYaml(issuer: string, policyDir: string, port = 0): string {
  return `id: cp-it
listen: { host: 127.0.0.1, port: ${port} }
policyDir: ${policyDir}
watch: { debounceMs: 20, pollIntervalMs: 1000 }
authn:
  issuers:
    - issuer: ${issuer}
      audiences: [${CP_AUDIENCE}]
bindings:
  - subject: orders-sidecar
    services: [orders]
  - subject: payments-sidecar
    services: [payments]
`;
}

/**
 * The authenticator a test control plane checks sidecar tokens with: it trusts `cfg`'s issuers,
 * with `cfg`'s skew and token size limits; `jwks` overrides the fetch settings.
 */
export function controlPlaneAuthenticator(cfg: ControlPlaneConfig, jwks: Partial<{ timeoutMs: number; cooldownMs: number }> = {}): Authenticator {
  const a = createAuthenticator({
    clockSkewSeconds: cfg.authn.clockSkewSeconds,
    maxTokenBytes: cfg.authn.maxTokenBytes,
    cacheEntries: 100,
    introspectionCacheMaxSeconds: 0,
    jwks: { timeoutMs: 2000, refreshIntervalMs: 300_000, cooldownMs: 0, graceMs: 3_600_000, ...jwks },
    credentials: [],
    log: silentLogger,
  });
  a.setIssuers(trustedIssuers(cfg));
  return a;
}
