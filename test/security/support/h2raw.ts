import net from 'node:net';

/**
 * A tiny HTTP/2 frame writer (RFC 9113 §4–6) and HPACK encoder (RFC 7541, literals and indexed
 * fields only, never Huffman), so tests can put on the wire what no well-behaved client library
 * would send: CONTINUATION floods, rapid resets, duplicate pseudo-headers, connection-specific
 * fields, header lists far past any limit. The reader only splits frames and keeps their type,
 * flags, stream and (for RST_STREAM / GOAWAY) error code: enough to tell how the peer reacted.
 */

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const ErrorCodeH2 = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
} as const;

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

export function settings(entries: readonly (readonly [id: number, value: number])[] = []): Buffer {
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, p);
}

export const settingsAck = (): Buffer => frame(FrameType.SETTINGS, Flag.ACK, 0);

export function headersFrame(streamId: number, block: Buffer, o: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  const flags = (o.endStream === true ? Flag.END_STREAM : 0) | (o.endHeaders === false ? 0 : Flag.END_HEADERS);
  return frame(FrameType.HEADERS, flags, streamId, block);
}

export function continuation(streamId: number, block: Buffer, endHeaders: boolean): Buffer {
  return frame(FrameType.CONTINUATION, endHeaders ? Flag.END_HEADERS : 0, streamId, block);
}

export function data(streamId: number, payload: Buffer, endStream = false): Buffer {
  return frame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId, payload);
}

export function rstStream(streamId: number, code: number = ErrorCodeH2.CANCEL): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function ping(opaque = Buffer.alloc(8)): Buffer {
  return frame(FrameType.PING, 0, 0, opaque);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment & 0x7fffffff);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

// ---- HPACK (RFC 7541)

/** §5.1 integer with an N-bit prefix; `first` carries the pattern bits above the prefix. */
export function hpackInt(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** §5.2 string literal, raw octets (H = 0). */
export function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(b.length, 7, 0x00), b]);
}

/** §6.2.2 literal header field without indexing, new name. */
export function literal(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** §6.2.1 literal header field with incremental indexing, new name (enters the dynamic table). */
export function literalIndexed(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** §6.1 indexed header field (static table 1–61, dynamic table from 62). */
export function indexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** §6.3 dynamic table size update. */
export function tableSizeUpdate(size: number): Buffer {
  return hpackInt(size, 5, 0x20);
}

/** A header block of literal fields, in order, exactly as given (duplicates, case, anything). */
export function block(fields: readonly (readonly [string, string])[]): Buffer {
  return Buffer.concat(fields.map(([n, v]) => literal(n, v)));
}

// ---- a raw connection

export interface RawFrame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
  /** RST_STREAM / GOAWAY error code. */
  readonly code: number | undefined;
}

export interface RawH2 {
  readonly socket: net.Socket;
  readonly frames: RawFrame[];
  /** Resolves when the peer closed the connection (or errored). */
  readonly closed: Promise<void>;
  isClosed(): boolean;
  write(...bufs: Buffer[]): boolean;
  /** Resolves with the first frame (seen or future) matching `pred`, or undefined after `ms` / on close. */
  waitFrame(pred: (f: RawFrame) => boolean, ms?: number): Promise<RawFrame | undefined>;
  goaway(): RawFrame | undefined;
  close(): void;
}

const open = new Set<RawH2>();

/**
 * Calls `onFrame` with each whole frame `socket` receives (type, flags, stream id, payload), after
 * the 24-octet client preface when `afterPreface` (a server's side); then `onChunk`, once per
 * read.
 */
export function onFrames(socket: net.Socket, afterPreface: boolean, onFrame: (type: number, flags: number, streamId: number, payload: Buffer) => void, onChunk?: () => void): void {
  let buf = Buffer.alloc(0);
  let preface = !afterPreface;
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    if (!preface) {
      if (buf.length < PREFACE.length) return;
      buf = buf.subarray(PREFACE.length);
      preface = true;
    }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const payload = buf.subarray(9, 9 + len);
      const type = buf[3] as number;
      const flags = buf[4] as number;
      const streamId = buf.readUInt32BE(5) & 0x7fffffff;
      buf = buf.subarray(9 + len);
      onFrame(type, flags, streamId, payload);
    }
    onChunk?.();
  });
}

/** Destroys every raw connection still open (call from afterEach: a failed assertion skips `close()`). */
export function closeAllRaw(): void {
  for (const c of open) c.close();
  open.clear();
}

/** Connects, sends the preface and an empty SETTINGS, ACKs the server's SETTINGS. */
export function rawH2(port: number, initialSettings: readonly (readonly [number, number])[] = []): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const frames: RawFrame[] = [];
    const waiters = new Set<() => void>();
    let closed = false;
    let resolveClosed: () => void = () => {};
    const closedP = new Promise<void>((r) => {
      resolveClosed = r;
    });
    onFrames(
      socket,
      false,
      (type, flags, streamId, payload) => {
        const code = type === FrameType.RST_STREAM ? payload.readUInt32BE(0) : type === FrameType.GOAWAY ? payload.readUInt32BE(4) : undefined;
        // Frames are recorded without their payload beyond 64 bytes (a flood test may see many),
        // except header blocks, which a test decodes whole.
        const keep = type === FrameType.HEADERS || type === FrameType.CONTINUATION ? payload.length : 64;
        frames.push({ type, flags, streamId, payload: Buffer.from(payload.subarray(0, keep)), code });
        if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0 && !socket.destroyed) socket.write(settingsAck());
      },
      () => {
        for (const w of waiters) w();
      },
    );
    const onClose = (): void => {
      closed = true;
      resolveClosed();
      for (const w of waiters) w();
    };
    socket.on('close', onClose);
    socket.on('error', () => {});
    socket.once('connect', () => {
      socket.write(Buffer.concat([PREFACE, settings(initialSettings)]));
      const conn: RawH2 = {
        socket,
        frames,
        closed: closedP,
        isClosed: () => closed,
        write: (...bufs) => !socket.destroyed && socket.write(Buffer.concat(bufs)),
        waitFrame(pred, ms = 2000) {
          const found = frames.find(pred);
          if (found !== undefined) return Promise.resolve(found);
          return new Promise((res) => {
            const check = (): void => {
              const f = frames.find(pred);
              if (f !== undefined || closed) {
                waiters.delete(check);
                clearTimeout(t);
                res(f);
              }
            };
            const t = setTimeout(() => {
              waiters.delete(check);
              res(undefined);
            }, ms);
            waiters.add(check);
          });
        },
        goaway: () => frames.find((f) => f.type === FrameType.GOAWAY),
        close: () => {
          open.delete(conn);
          socket.destroy();
        },
      };
      open.add(conn);
      resolve(conn);
    });
    socket.once('error', reject);
  });
}

/** The request header block of a normal GET, with extra fields appended. */
export function requestBlock(path: string, extra: readonly (readonly [string, string])[] = [], method = 'GET'): Buffer {
  return block([[':method', method], [':scheme', 'http'], [':authority', 'orders'], [':path', path], ...extra]);
}

/**
 * A raw h2c "app" that answers each request (a HEADERS frame that ends its block) with the bytes
 * `answer(streamId)` gives: frames a real HTTP/2 server would refuse to send, for tests of what
 * ward does with a malformed response. It acknowledges SETTINGS and reads nothing else.
 */
export function startRawH2App(answer: (streamId: number) => Buffer): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    sock.write(settings());
    onFrames(sock, true, (type, flags, id) => {
      if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0) sock.write(settingsAck());
      if (type === FrameType.HEADERS && (flags & Flag.END_HEADERS) !== 0) sock.write(answer(id));
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    ),
  );
}
