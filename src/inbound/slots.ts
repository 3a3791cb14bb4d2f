/**
 * Calls sent to the app and not yet over (`upstream.maxRequests`): a call takes a place when it
 * is sent and gives it back in `Exchange.release`, which runs once, when its caller's stream
 * closes, however the call ended.
 */
export class RequestSlots {
  /** 0: no limit. */
  readonly max: number;
  active = 0;
  /** Calls refused because `active` was at `max`. */
  overflowed = 0;

  constructor(max: number) {
    this.max = max;
  }
}
