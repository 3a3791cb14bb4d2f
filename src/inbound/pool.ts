import { H2Connection, type H2ConnectionOptions, type H2StreamHandler } from '../h2/conn.ts';
import type { Logger } from '../lib/log.ts';

/**
 * A small fixed set of HTTP/2 (h2c) connections to the local app (ward's own client,
 * `src/h2/conn.ts`). Calls are spread round-robin over `size` slots; a slot connects lazily and
 * is refilled after its connection receives GOAWAY, errors or closes, so no call ever opens its
 * own connection. In-flight streams on a connection that got GOAWAY finish on it; new ones go
 * to a fresh connection.
 */

const kSlot: unique symbol = Symbol('ward.pool.slot');
const kUnusable: unique symbol = Symbol('ward.pool.unusable');
type PooledConnection = H2Connection & { [kSlot]?: number; [kUnusable]?: boolean };

export class H2ConnectionPool {
  readonly #host: string;
  readonly #port: number;
  readonly #slots: (PooledConnection | undefined)[];
  readonly #connectTimeoutMs: number;
  readonly #handler: H2StreamHandler;
  readonly #log: Logger;
  /** Every connection not yet closed, including retired ones still finishing their streams. */
  readonly #all = new Set<PooledConnection>();
  readonly #closing: (() => void)[] = [];
  #next = 0;
  #closed = false;

  readonly #tls: H2ConnectionOptions['tls'];

  /** `tls`: connect with TLS (ALPN h2) instead of h2c (an https:// destination). */
  constructor(host: string, port: number, size: number, connectTimeoutMs: number, handler: H2StreamHandler, log: Logger, tls?: H2ConnectionOptions['tls']) {
    this.#tls = tls;
    this.#host = host;
    this.#port = port;
    this.#slots = new Array<PooledConnection | undefined>(Math.max(1, size)).fill(undefined);
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#handler = handler;
    this.#log = log;
  }

  /** A usable connection (connecting or connected). Throws only after `close()`. */
  connection(): H2Connection {
    if (this.#closed) throw new Error('upstream pool closed');
    const i = this.#next;
    this.#next = (i + 1) % this.#slots.length;
    const c = this.#slots[i];
    if (c !== undefined && c.usable) return c;
    return this.#connect(i);
  }

  /**
   * A connection for a call that `refused` (a connection of this pool) declined without
   * processing it (it is going away, or over its stream limit): `refused` takes no new calls
   * (those in flight finish on it) and the call goes to the connection that replaces it in its
   * slot, connected after the refusal - not to another slot, whose connection may be going away too.
   */
  replacing(refused: H2Connection): H2Connection {
    if (this.#closed) throw new Error('upstream pool closed');
    const r = refused as PooledConnection;
    r[kUnusable] = true;
    const i = r[kSlot] ?? 0;
    const cur = this.#slots[i];
    if (cur !== undefined && cur !== r && cur.usable && cur[kUnusable] !== true) return cur;
    return this.#connect(i);
  }

  /** Connections currently held (for tests and status). */
  get size(): number {
    let n = 0;
    for (const c of this.#slots) if (c !== undefined && c.usable && c[kUnusable] !== true) n++;
    return n;
  }

  #connect(i: number): H2Connection {
    const c: PooledConnection = new H2Connection({
      host: this.#host,
      port: this.#port,
      handler: this.#handler,
      connectTimeoutMs: this.#connectTimeoutMs,
      ...(this.#tls === undefined ? {} : { tls: this.#tls }),
      onUnusable: (x) => {
        this.#log.debug('upstream connection retired');
        if (this.#slots[i] === x) this.#slots[i] = undefined;
      },
      onClose: (x) => {
        if (this.#slots[i] === x) this.#slots[i] = undefined;
        this.#all.delete(x);
        if (this.#all.size === 0) for (const done of this.#closing.splice(0)) done();
      },
    });
    c[kSlot] = i;
    this.#slots[i] = c;
    this.#all.add(c);
    return c;
  }

  /** Graceful: connections finish their streams, then close. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#slots.fill(undefined);
    if (this.#all.size === 0) return;
    const done = new Promise<void>((resolve) => this.#closing.push(resolve));
    for (const c of this.#all) c.close();
    await done;
  }

  destroy(): void {
    this.#closed = true;
    for (const c of [...this.#all]) c.destroy();
    this.#slots.fill(undefined);
  }
}
