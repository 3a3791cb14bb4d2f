/** Injected time source: milliseconds since the epoch. Tests pass a fake; production uses Date.now. */
export type Clock = () => number;
export const systemClock: Clock = Date.now;
