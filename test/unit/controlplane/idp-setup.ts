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
