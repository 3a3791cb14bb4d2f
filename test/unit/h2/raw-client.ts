import net from 'node:net';
import { FLAG_ACK, FLAG_END_HEADERS, GOAWAY, HEADERS, CONTINUATION, PREFACE, RST_STREAM, SETTINGS, frame, settingsFrame } from '../../../src/h2/frames.ts';
import { HpackDecoder } from '../../../src/h2/hpack.ts';

/**
 * A raw HTTP/2 client for the server connection's unit tests: it writes whatever bytes it is
 * given and splits what comes back into whole frames (full payloads, decoded header blocks), so
 * a test can state the exact frame sequence it expects. Unlike test/security/support/h2raw.ts
 * it can stop reading (`pause`), to play a peer that makes the server answer but never reads.
 */

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
  /** RST_STREAM / GOAWAY error code. */
  readonly code: number | undefined;
  /** HEADERS: the decoded field list (with its CONTINUATIONs). */
  fields?: string[];
}

export interface RawOptions {
  /** Send the preface and an empty SETTINGS on connect (default true). */
  readonly preface?: boolean;
  readonly settings?: readonly (readonly [number, number])[];
  /** Start with reading stopped. */
  readonly paused?: boolean;
  /**
   * Acknowledge the server's SETTINGS (default true). Off for a client that writes a byte
   * stream of its own, which an acknowledgement would cut in the middle of a frame.
   */
  readonly autoAck?: boolean;
}

export class RawClient {
  readonly socket: net.Socket;
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  /** Octets received, whole frames or not. */
  received = 0;
  #buf: Buffer = Buffer.alloc(0);
  #isClosed = false;
  #waiters = new Set<() => void>();
  #decoder = new HpackDecoder();
  #block: { frame: Frame; chunks: Buffer[] } | null = null;

  readonly #autoAck: boolean;

  private constructor(socket: net.Socket, autoAck: boolean) {
    this.socket = socket;
    this.#autoAck = autoAck;
    let done: () => void = () => {};
    this.closed = new Promise((r) => {
      done = r;
    });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#isClosed = true;
      done();
      this.#wake();
    });
  }

  static connect(port: number, o: RawOptions = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.setNoDelay(true);
      const c = new RawClient(socket, o.autoAck ?? true);
      if (o.paused === true) socket.pause();
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        if (o.preface !== false) socket.write(Buffer.concat([PREFACE, settingsFrame(o.settings ?? [])]));
        resolve(c);
      });
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  send(...bufs: Buffer[]): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(bufs.length === 1 ? (bufs[0] as Buffer) : Buffer.concat(bufs));
  }

  /** The first frame (seen or future) matching `pred`; undefined after `ms` or once the socket closed. */
  wait(pred: (f: Frame) => boolean, ms = 2000): Promise<Frame | undefined> {
    const found = this.frames.find(pred);
    if (found !== undefined || this.#isClosed) return Promise.resolve(found);
    return new Promise((resolve) => {
      const check = (): void => {
        const f = this.frames.find(pred);
        if (f === undefined && !this.#isClosed) return;
        this.#waiters.delete(check);
        clearTimeout(t);
        resolve(f);
      };
      const t = setTimeout(() => {
        this.#waiters.delete(check);
        resolve(undefined);
      }, ms);
      this.#waiters.add(check);
    });
  }

  /** Resolves once the socket closed, or after `ms`; true when it closed. */
  async waitClosed(ms = 2000): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => {
      t = setTimeout(r, ms);
    });
    await Promise.race([this.closed, timeout]);
    clearTimeout(t);
    return this.#isClosed;
  }

  goaway(ms = 2000): Promise<Frame | undefined> {
    return this.wait((f) => f.type === GOAWAY, ms);
  }

  rst(streamId: number, ms = 2000): Promise<Frame | undefined> {
    return this.wait((f) => f.type === RST_STREAM && f.streamId === streamId, ms);
  }

  of(streamId: number): Frame[] {
    return this.frames.filter((f) => f.streamId === streamId);
  }

  destroy(): void {
    this.socket.destroy();
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  #onData(chunk: Buffer): void {
    this.received += chunk.length;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    let off = 0;
    const buf = this.#buf;
    while (buf.length - off >= 9) {
      const len = buf.readUIntBE(off, 3);
      if (buf.length - off - 9 < len) break;
      const type = buf[off + 3] as number;
      const flags = buf[off + 4] as number;
      const streamId = buf.readUInt32BE(off + 5) & 0x7fff_ffff;
      const payload = Buffer.from(buf.subarray(off + 9, off + 9 + len));
      off += 9 + len;
      const code = (type === RST_STREAM && len >= 4) ? payload.readUInt32BE(0) : (type === GOAWAY && len >= 8) ? payload.readUInt32BE(4) : undefined;
      const f: Frame = { type, flags, streamId, payload, code };
      this.frames.push(f);
      if (type === SETTINGS && (flags & FLAG_ACK) === 0 && this.#autoAck && this.socket.writable) this.socket.write(frame(SETTINGS, FLAG_ACK, 0, null));
      if (type === HEADERS) this.#headers(f, flags, payload);
      else if (type === CONTINUATION && this.#block !== null) {
        this.#block.chunks.push(payload);
        if ((flags & FLAG_END_HEADERS) !== 0) this.#endBlock();
      }
    }
    this.#buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    this.#wake();
  }

  // The server sends neither padding nor priority, so a HEADERS payload is the block itself.
  #headers(f: Frame, flags: number, payload: Buffer): void {
    this.#block = { frame: f, chunks: [payload] };
    if ((flags & FLAG_END_HEADERS) !== 0) this.#endBlock();
  }

  #endBlock(): void {
    const b = this.#block;
    if (b === null) return;
    this.#block = null;
    const block = Buffer.concat(b.chunks);
    const fields: string[] = [];
    this.#decoder.decode(block, 0, block.length, fields);
    b.frame.fields = fields;
  }
}

/** Fields of a flat list as `name: value` lines, for readable assertions. */
export function fieldPairs(fields: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < fields.length; i += 2) out.push([fields[i] as string, fields[i + 1] as string]);
  return out;
}
