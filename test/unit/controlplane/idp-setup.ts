import { defaultDevIdpConfig } from '../../../src/devidp/config.ts';
import type { startTestIdp } from '../../support/idp.ts';

/**
 * Dev-IdP and control-plane config for the control-plane integration tests
 * (test/integration/controlplane-*.test.ts): sidecars get client-credentials tokens for the
 * control plane's own audience, as they would from a real IdP.
 */

export const CP_AUDIENCE = 'urn:ward:control-plane';

/** The default dev-IdP config plus a control-plane resource the two sidecar clients may get tokens for. */
export function idpWithControlPlane(): Parameters<typeof startTestIdp>[0] {
  const base = defaultDevIdpConfig();
  return {
    resourceServers: [...base.resourceServers, { resource: CP_AUDIENCE, scopes: [], accessTokenFormat: 'jwt', accessTokenTtlSeconds: 300 }],
    clients: base.clients.map((c) =>
      c.clientId === 'orders-sidecar' || c.clientId === 'payments-sidecar'
        ? { ...c, grantTypes: [...c.grantTypes, 'client_credentials' as const], resources: { ...c.resources, [CP_AUDIENCE]: [] } }
        : c,
    ),
  };
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
