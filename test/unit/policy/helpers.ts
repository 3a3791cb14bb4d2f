import { identityFromClaims } from '../../../src/policy/identity.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import type { CompiledPolicy, Facts, Identity, RequestFacts } from '../../../src/policy/model.ts';

export const ISSUER = 'https://idp.example.com';
export const OTHER_ISSUER = 'https://other.example.com';

/** A policy's text up to `rules:` with one trusted issuer; the rules follow, indented as list items. */
export const ONE_ISSUER_HEAD = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${ISSUER}
    audiences: [urn:ward:orders]
rules:
`;

/** A policy with two trusted issuers and the given YAML for `rules:` (indented as list items). */
export function policy(rules: string, extra = ''): CompiledPolicy {
  const text = `apiVersion: ward.dev/v1
kind: Policy
service: orders
${extra}issuers:
  - issuer: ${ISSUER}
    audiences: [urn:ward:orders]
  - issuer: ${OTHER_ISSUER}
    audiences: [urn:ward:orders]
rules:
${rules}`;
  return parsePolicyText(text, 'test.yaml', { env: {} });
}

export function id(claims: Record<string, unknown>, issuer = ISSUER): Identity {
  return identityFromClaims({ iss: issuer, sub: 'alice', ...claims });
}

export function grpc(method: string): RequestFacts {
  return { protocol: 'grpc', method: 'POST', path: method, grpcMethod: method };
}

export function http(method: string, path: string): RequestFacts {
  return { protocol: 'http', method, path, grpcMethod: undefined };
}

export function facts(identity: Identity | null, request: RequestFacts): Facts {
  return { identity, request };
}
