/**
 * Retry delays (control-plane reconnects, token-endpoint back-off): exponential with "equal
 * jitter" (half fixed, half random), so a fleet of sidecars that lost a peer at the same moment
 * does not come back in lockstep, and no delay is ever zero (a tight retry loop cannot happen
 * even with an unlucky random()).
 */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000 };

/** Delay before reconnect attempt `attempt` (0-based): in [cap/2, cap], cap = min(max, initial·2^attempt). */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const cap = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(cap / 2 + (cap / 2) * Math.min(Math.max(random(), 0), 1));
}
