import * as z from '../lib/schema.ts';

/** The longest delay Node's timers take (2^31-1 ms, ~24.8 days): beyond it `setTimeout` fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * An integer of milliseconds that a timer will run: bounded by MAX_TIMER_MS, so a value meant as
 * "practically never" cannot become 1 ms (found in review: `requestTimeoutMs: 2147483648` timed
 * out every call at once).
 */
export function ms(): z.NumberSchema {
  return z.int().max(MAX_TIMER_MS, `at most ${MAX_TIMER_MS} (2^31-1 ms, about 24.8 days: the longest timer Node runs)`);
}
