import { createHash } from 'node:crypto';

/** A short, non-reversible fingerprint for logs and cache keys: never log the token itself. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('base64url').slice(0, 16);
}
