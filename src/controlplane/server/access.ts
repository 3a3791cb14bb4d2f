import type { Metadata } from '@grpc/grpc-js';
import type { ErrorCode } from '../../errors/codes.ts';
import type { WardError } from '../../errors/ward-error.ts';
import type { Identity } from '../../policy/model.ts';
import type { ControlPlaneConfig } from './config.ts';
import { isLoopbackIp } from '../../lib/loopback.ts';

/**
 * Who may talk to the control plane: bearer extraction from gRPC metadata, the identity->service
 * bindings, and the loopback exemption for GetStatus. Token verification itself is the ward
 * authenticator's (authn/), injected as `Authenticate`, so sidecar tokens are checked exactly
 * like service tokens.
 */

export type AuthResult = { readonly ok: true; readonly identity: Identity } | { readonly ok: false; readonly error: WardError };

/** The part of authn's authenticator the control plane uses. */
export interface Authenticate {
  authenticate(token: string): AuthResult | Promise<AuthResult>;
}

// RFC 6750 §2.1 b64token
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

/** Exactly one `authorization: Bearer <token>` entry, or the reason there is none. */
export function bearerFromMetadata(md: Metadata): { ok: true; token: string } | { ok: false; code: ErrorCode } {
  const values = md.get('authorization');
  if (values.length === 0) return { ok: false, code: 'ERR_TOKEN_MISSING' };
  if (values.length > 1) return { ok: false, code: 'ERR_TOKEN_MULTIPLE' };
  const v = values[0];
  if (typeof v !== 'string') return { ok: false, code: 'ERR_TOKEN_MALFORMED' };
  const m = BEARER.exec(v);
  if (m === null || m[1] === undefined) return { ok: false, code: v.trim() === '' ? 'ERR_TOKEN_MISSING' : 'ERR_TOKEN_MALFORMED' };
  return { ok: true, token: m[1] };
}

export type BindingCheck = (identity: Identity, service: string) => boolean;

/** Compiles the `bindings` config into a check; no binding matching means no access. */
export function compileBindings(bindings: ControlPlaneConfig['bindings']): BindingCheck {
  const bySubject = new Map<string, { issuer: string | undefined; services: ReadonlySet<string> }[]>();
  const byClaim: { claim: string; issuer: string | undefined }[] = [];
  for (const b of bindings) {
    if (b.subject !== undefined) {
      const list = bySubject.get(b.subject) ?? [];
      list.push({ issuer: b.issuer, services: new Set(b.services ?? []) });
      bySubject.set(b.subject, list);
    } else if (b.claim !== undefined) {
      byClaim.push({ claim: b.claim, issuer: b.issuer });
    }
  }
  return (identity, service) => {
    for (const b of bySubject.get(identity.subject) ?? []) {
      if ((b.issuer === undefined || b.issuer === identity.issuer) && b.services.has(service)) return true;
    }
    for (const b of byClaim) {
      if (b.issuer !== undefined && b.issuer !== identity.issuer) continue;
      if (claimServices(identity.claims[b.claim]).includes(service)) return true;
    }
    return false;
  };
}

function claimServices(v: unknown): readonly string[] {
  if (typeof v === 'string') return v.split(' ').filter((s) => s !== '');
  if (Array.isArray(v)) return v.filter((s): s is string => typeof s === 'string');
  return [];
}

/**
 * grpc-js reports the peer as `<remoteAddress>:<port>` (`::1:5000`, `::ffff:127.0.0.1:5000`,
 * `127.0.0.1:5000`). Only addresses in 127.0.0.0/8 and ::1 count as loopback.
 */
export function isLoopbackPeer(peer: string): boolean {
  const colon = peer.lastIndexOf(':');
  let addr = colon === -1 ? peer : peer.slice(0, colon);
  if (addr.startsWith('[') && addr.endsWith(']')) addr = addr.slice(1, -1);
  return isLoopbackIp(addr);
}
