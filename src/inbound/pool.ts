import http2, { type ClientHttp2Session } from 'node:http2';
import type { Logger } from '../lib/log.ts';

/**
 * A small fixed set of HTTP/2 (h2c) sessions to the local app. Calls are spread round-robin
 * over `size` slots; a slot connects lazily and is refilled after its session receives GOAWAY,
 * errors or closes, so no call ever opens its own connection. In-flight streams on a session
 * that got GOAWAY finish on it; new ones go to a fresh session.
 */

const kUnusable: unique symbol = Symbol('ward.pool.unusable');
const kSlot: unique symbol = Symbol('ward.pool.slot');
type PooledSession = ClientHttp2Session & { [kUnusable]?: boolean; [kSlot]?: number };

const SESSION_OPTIONS: http2.ClientSessionOptions = Object.freeze({
  // The app never needs to push; refusing it up front closes a resource-exhaustion path.
  settings: { enablePush: false },
});

export class H2SessionPool {
  readonly #origin: string;
  readonly #slots: (PooledSession | undefined)[];
  readonly #connectTimeoutMs: number;
  readonly #log: Logger;
  /** Every session not yet closed, including retired ones still finishing their streams. */
  readonly #all = new Set<PooledSession>();
  #next = 0;
  #closed = false;

  constructor(origin: string, size: number, connectTimeoutMs: number, log: Logger) {
    this.#origin = origin;
    this.#slots = new Array<PooledSession | undefined>(Math.max(1, size)).fill(undefined);
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#log = log;
  }

  /** A usable session (connecting or connected). Throws only after `close()`. */
  session(): ClientHttp2Session {
    if (this.#closed) throw new Error('upstream pool closed');
    const i = this.#next;
    this.#next = (i + 1) % this.#slots.length;
    const s = this.#slots[i];
    if (s !== undefined && !s[kUnusable] && !s.closed && !s.destroyed) return s;
    return this.#connect(i);
  }

  /**
   * A session for a call that `refused` (a session of this pool) declined without processing it
   * (it is going away, or over its stream limit): `refused` takes no new calls (those in flight
   * finish on it) and the call goes to the session that replaces it in its slot, connected after
   * the refusal — not to another slot, whose session may be going away too.
   */
  replacing(refused: ClientHttp2Session): ClientHttp2Session {
    if (this.#closed) throw new Error('upstream pool closed');
    const s = refused as PooledSession;
    s[kUnusable] = true;
    const i = s[kSlot] ?? 0;
    const cur = this.#slots[i];
    if (cur !== undefined && cur !== s && !cur[kUnusable] && !cur.closed && !cur.destroyed) return cur;
    return this.#connect(i);
  }

  /** Sessions currently held (for tests and status). */
  get size(): number {
    let n = 0;
    for (const s of this.#slots) if (s !== undefined && !s[kUnusable]) n++;
    return n;
  }

  #connect(i: number): ClientHttp2Session {
    const s: PooledSession = http2.connect(this.#origin, SESSION_OPTIONS);
    s[kSlot] = i;
    this.#slots[i] = s;
    this.#all.add(s);
    const retire = (): void => {
      s[kUnusable] = true;
      if (this.#slots[i] === s) this.#slots[i] = undefined;
    };
    s.on('error', (err) => {
      this.#log.debug('upstream session error', { err });
      retire();
    });
    s.on('goaway', (code) => {
      this.#log.debug('upstream GOAWAY', { code });
      retire();
    });
    s.on('close', () => {
      retire();
      this.#all.delete(s);
    });
    if (this.#connectTimeoutMs > 0) {
      // One timer per connection attempt, not per call.
      const t = setTimeout(() => {
        if (s.connecting) s.destroy(Object.assign(new Error('upstream connect timeout'), { code: 'ETIMEDOUT' }));
      }, this.#connectTimeoutMs);
      t.unref();
      s.once('connect', () => clearTimeout(t));
      s.once('close', () => clearTimeout(t));
    }
    return s;
  }

  /** Graceful: sessions finish their streams, then close. */
  async close(): Promise<void> {
    this.#closed = true;
    const closing: Promise<void>[] = [];
    for (const s of this.#all) {
      if (s.closed || s.destroyed) continue;
      closing.push(new Promise<void>((resolve) => s.close(resolve)));
    }
    this.#slots.fill(undefined);
    await Promise.all(closing);
  }

  destroy(): void {
    this.#closed = true;
    for (const s of this.#all) s.destroy();
    this.#all.clear();
    this.#slots.fill(undefined);
  }
}
