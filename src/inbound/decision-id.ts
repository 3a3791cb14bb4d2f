import { randomBytes } from 'node:crypto';

/**
 * Decision ids: a random per-process prefix plus a counter. Unique across replicas and
 * restarts in practice, cheap on the hot path (no randomness per call), and not a secret.
 */
export function createDecisionIds(): () => string {
  const prefix = `${randomBytes(6).toString('base64url')}.`;
  let n = 0;
  return () => prefix + (++n).toString(36);
}
