/** A stage's answer is either at hand or a promise of it: which one (a thenable counts as a promise). */
export function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown }).then === 'function';
}
