import type { Duplex } from 'node:stream';
import {
  ENHANCE_YOUR_CALM,
  CONTINUATION,
  DATA,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FLAG_ACK,
  FLOW_CONTROL_ERROR,
  frame,
  FRAME_HEADER,
  FRAME_SIZE_ERROR,
  FrameAssembler,
  GOAWAY,
  HEADERS,
  MAX_FRAME_LIMIT,
  MAX_WINDOW,
  PING,
  PRIORITY,
  PROTOCOL_ERROR,
  PUSH_PROMISE,
  RST_STREAM,
  SETTINGS,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
  u32Frame,
  WINDOW_UPDATE,
  writeFrameHeader,
} from './frames.ts';
import type { HpackEncoder } from './hpack.ts';

/** Acknowledgements a peer may have us queue while it does not read (see `ack`). */
const MAX_QUEUED_ACKS = 1000;

const SETTINGS_ACK = frame(SETTINGS, FLAG_ACK, 0, null);

/** The connection-level receive window each side grants (its first WINDOW_UPDATE raises the default to it). */
export const CONN_RECV_WINDOW = 16 * 1024 * 1024;

/** What the send side needs of a stream: ward's client and server streams both have it. */
export interface SendStream {
  id: number;
  sendWindow: number;
  /** Body bytes waiting for flow-control window. */
  pending: Buffer[] | null;
  /** A write returned false: `drained` is due once the bytes are out. */
  wantDrain: boolean;
}

/** DATA payloads up to this size are copied behind their frame header (one write); larger ones are written as they are. */
const COPY_LIMIT = 4096;

/**
 * What ward's HTTP/2 client (conn.ts) and server (server.ts) connections share: writing frames
 * into the socket's corked batch, header blocks (HEADERS + CONTINUATION), DATA within the peer's
 * flow-control windows with the rest held per stream, reading whole frames out of the socket,
 * and assembling a header block from HEADERS and its CONTINUATIONs. The subclasses decide what
 * each frame means for their side.
 */
export abstract class H2Endpoint<S extends SendStream> {
  readonly socket: Duplex;
  protected readonly encoder: HpackEncoder;
  /** Streams with body bytes waiting for window. */
  protected readonly blocked = new Set<S>();
  protected readonly reader = new FrameAssembler(DEFAULT_MAX_FRAME);
  protected peerInitialWindow = DEFAULT_WINDOW;
  protected peerMaxFrame = DEFAULT_MAX_FRAME;
  protected connSendWindow = DEFAULT_WINDOW;
  #corked = false;
  /** Acknowledgements written since the socket last had room or drained. */
  #queuedAcks = 0;
  /** Whether a header block went out yet: the first one starts with a table size update (writeHeaders). */
  #sentHeaderBlock = false;
  // A header block in progress (HEADERS without END_HEADERS, then CONTINUATION).
  protected contStream = 0;
  #contEnd = false;
  #contChunks: Buffer[] = [];
  #contBytes = 0;
  #contFrames = 0;

  constructor(socket: Duplex, encoder: HpackEncoder) {
    this.socket = socket;
    this.encoder = encoder;
  }

  /** The connection is over: stop reading frames. */
  protected abstract get halted(): boolean;
  protected abstract connectionError(code: number, message: string): void;
  // What each frame type means to this side (RFC 9113 §6), called by `frame` after the checks
  // both sides share.
  protected abstract onData(flags: number, id: number, buf: Buffer, start: number, end: number): void;
  protected abstract onReset(id: number, buf: Buffer, start: number, end: number): void;
  /**
   * A setting only this side acts on (or checks differently): SETTINGS_ENABLE_PUSH and
   * SETTINGS_MAX_CONCURRENT_STREAMS. Returns why it is a connection error (PROTOCOL_ERROR), or null.
   */
  protected abstract peerSetting(key: number, value: number): string | null;
  /** The streams open now, for the window change a new SETTINGS_INITIAL_WINDOW_SIZE makes. */
  protected abstract openStreams(): IterableIterator<S>;
  /** After the peer's SETTINGS were applied and acknowledged. */
  protected settingsApplied(): void {}
  /** A GOAWAY on stream 0 with its last stream id and error code. */
  protected abstract onGoaway(buf: Buffer, start: number, end: number): void;
  /** A PRIORITY frame on stream `id` that is not 5 octets long (a stream error, §6.3). */
  protected abstract onBadPriority(id: number): void;
  /** The open stream `id`, if any. */
  protected abstract streamOf(id: number): S | undefined;
  /** Whether `id` names a stream that was never opened (frames on it are a connection error, §5.1). */
  protected abstract isIdle(id: number): boolean;
  /** A WINDOW_UPDATE that is a stream error on `s` (§6.9): an increment of 0, or a window past 2^31-1. */
  protected abstract windowUpdateError(s: S, code: number, detail: string): void;
  /** A complete header block for stream `id`. */
  protected abstract headerBlock(id: number, endStream: boolean, buf: Buffer, start: number, end: number): void;
  /** The error for a header block this large (octets, CONTINUATION frames so far), or null. */
  protected abstract headerBlockLimit(bytes: number, frames: number): readonly [code: number, message: string] | null;
  protected abstract isClosed(s: S): boolean;
  /** A stream's held bytes are all out: what was waiting for them (the end of the stream). */
  protected abstract afterFlush(s: S): void;
  /** A stream whose write returned false can take more. */
  protected abstract drained(s: S): void;

  /** The peer's SETTINGS arrived: its preface must open with them (§3.4). */
  protected gotSettings = false;
  #connRecvWindow = CONN_RECV_WINDOW;
  #connRecvUnacked = 0;

  /**
   * What every DATA frame gets on either side (§6.1, §6.9): the stream-0 check, connection flow
   * control (the window is given back on receipt: per-stream windows bound what is held), and
   * its padding taken off. Returns the end of the payload, which starts at `start + 1` when the
   * frame is PADDED, or -1 after a connection error.
   */
  protected dataPayloadEnd(flags: number, id: number, buf: Buffer, start: number, end: number): number {
    if (id === 0) return this.#dataError(PROTOCOL_ERROR, 'DATA on stream 0');
    const len = end - start;
    this.#connRecvWindow -= len;
    if (this.#connRecvWindow < 0) return this.#dataError(FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    this.#connRecvUnacked += len;
    if (this.#connRecvUnacked >= CONN_RECV_WINDOW / 2) {
      this.#connRecvWindow += this.#connRecvUnacked;
      this.write(u32Frame(WINDOW_UPDATE, 0, this.#connRecvUnacked));
      this.#connRecvUnacked = 0;
    }
    if ((flags & FLAG_PADDED) === 0) return end;
    if (len < 1) return this.#dataError(PROTOCOL_ERROR, 'DATA padding');
    const pad = buf[start] as number;
    if (pad > len - 1) return this.#dataError(PROTOCOL_ERROR, 'DATA padding longer than the frame');
    return end - pad;
  }

  #dataError(code: number, message: string): number {
    this.connectionError(code, message);
    return -1;
  }

  /**
   * A priority signal (PRIORITY frame, or HEADERS with the PRIORITY flag) that makes a stream
   * depend on itself. RFC 7540 §5.3.1 made this a stream error PROTOCOL_ERROR; RFC 9113 dropped
   * the rule along with the priority scheme (§5.3.2 keeps only the frame layouts), so nothing
   * requires a check now. ward keeps one, the same for both carriers, as nghttp2 (Node's and
   * Envoy's HTTP/2) does: a connection error PROTOCOL_ERROR, which §5.4.1 allows for any stream
   * error. Not a stream error: a PRIORITY frame may name an idle stream, on which a RST_STREAM
   * must not be sent (§6.4), and the peer is broken or probing either way.
   */
  #selfDependent(): void {
    this.connectionError(PROTOCOL_ERROR, 'stream depends on itself');
  }

  /** The peer acknowledged one of our PINGs (`payload`: its 8 bytes, a view of the read buffer). */
  protected onPingAck(_payload: Buffer): void {}

  /**
   * Sends a PING or SETTINGS acknowledgement. Written while the socket is backed up, they are
   * counted: a peer that makes us answer but does not read loses its connection (nghttp2's
   * outbound-ACK limit, CVE-2019-9512/9515). On both legs: the client side talks to apps,
   * destinations, the collector and the control plane, and a PING flood from one of them grew
   * ward's socket buffer without bound (found in review).
   */
  protected ack(buf: Buffer): void {
    if (!this.socket.writableNeedDrain) this.#queuedAcks = 0;
    else if (++this.#queuedAcks > MAX_QUEUED_ACKS) {
      this.connectionError(ENHANCE_YOUR_CALM, 'control frames flood');
      return;
    }
    this.write(buf);
  }

  /** The peer's SETTINGS (§6.5): checked, applied, acknowledged. */
  protected onSettings(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id !== 0) return this.connectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if ((flags & FLAG_ACK) !== 0) {
      if (end !== start) this.connectionError(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if ((end - start) % 6 !== 0) return this.connectionError(FRAME_SIZE_ERROR, 'SETTINGS length');
    this.gotSettings = true;
    let windowDelta = 0;
    for (let p = start; p < end; p += 6) {
      const key = buf.readUInt16BE(p);
      const value = buf.readUInt32BE(p + 2);
      if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) return this.connectionError(FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1');
        windowDelta += value - this.peerInitialWindow;
        this.peerInitialWindow = value;
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME || value > MAX_FRAME_LIMIT) return this.connectionError(PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        this.peerMaxFrame = value;
      } else {
        // HEADER_TABLE_SIZE: our encoder never uses the dynamic table, and announced a size of 0
        // at the start of its first block (writeHeaders); MAX_HEADER_LIST_SIZE is advisory.
        const bad = this.peerSetting(key, value);
        if (bad !== null) return this.connectionError(PROTOCOL_ERROR, bad);
      }
    }
    this.ack(SETTINGS_ACK);
    if (this.halted) return;
    if (windowDelta !== 0) {
      for (const s of this.openStreams()) {
        s.sendWindow += windowDelta;
        if (s.sendWindow > MAX_WINDOW) return this.connectionError(FLOW_CONTROL_ERROR, 'a stream window above 2^31-1');
      }
      if (windowDelta > 0) for (const s of [...this.openStreams()]) if (s.pending !== null) this.flushStream(s);
    }
    this.settingsApplied();
  }

  /** WINDOW_UPDATE (§6.9): more send window for the connection or one stream. */
  protected onWindowUpdate(id: number, buf: Buffer, start: number, end: number): void {
    if (end - start !== 4) return this.connectionError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE length');
    const inc = buf.readUInt32BE(start) & 0x7fff_ffff;
    if (id === 0) {
      if (inc === 0) return this.connectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.connSendWindow += inc;
      if (this.connSendWindow > MAX_WINDOW) return this.connectionError(FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
      this.flushBlocked();
      return;
    }
    const s = this.streamOf(id);
    if (s === undefined) {
      if (this.isIdle(id)) this.connectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
      return;
    }
    if (inc === 0) return this.windowUpdateError(s, PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.windowUpdateError(s, FLOW_CONTROL_ERROR, 'stream window above 2^31-1');
    if (s.pending !== null) this.flushStream(s);
  }

  /** One frame from the peer, dispatched by type after the checks both sides share. */
  protected frame(type: number, flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (!this.gotSettings && type !== SETTINGS) return this.connectionError(PROTOCOL_ERROR, 'the peer\'s preface must start with SETTINGS');
    if (this.contStream !== 0 && (type !== CONTINUATION || id !== this.contStream)) return this.connectionError(PROTOCOL_ERROR, 'expected CONTINUATION');
    switch (type) {
      case DATA:
        return this.onData(flags, id, buf, start, end);
      case HEADERS:
        return this.onHeadersFrame(flags, id, buf, start, end);
      case CONTINUATION:
        return this.onContinuation(flags, id, buf, start, end);
      case RST_STREAM:
        return this.onReset(id, buf, start, end);
      case SETTINGS:
        return this.onSettings(flags, id, buf, start, end);
      case PING:
        if (id !== 0) return this.connectionError(PROTOCOL_ERROR, 'PING on a stream');
        if (end - start !== 8) return this.connectionError(FRAME_SIZE_ERROR, 'PING length');
        if ((flags & FLAG_ACK) === 0) this.ack(frame(PING, FLAG_ACK, 0, buf.subarray(start, end)));
        else this.onPingAck(buf.subarray(start, end));
        return;
      case GOAWAY:
        if (id !== 0) return this.connectionError(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (end - start < 8) return this.connectionError(FRAME_SIZE_ERROR, 'GOAWAY length');
        return this.onGoaway(buf, start, end);
      case WINDOW_UPDATE:
        return this.onWindowUpdate(id, buf, start, end);
      case PUSH_PROMISE:
        // Push is off in ward's SETTINGS, and a client never pushes.
        return this.connectionError(PROTOCOL_ERROR, 'PUSH_PROMISE');
      case PRIORITY:
        // Deprecated (RFC 9113 §5.3.2, §6.3): checked, never acted on.
        if (id === 0) return this.connectionError(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (end - start !== 5) this.onBadPriority(id);
        else if ((buf.readUInt32BE(start) & 0x7fff_ffff) === id) this.#selfDependent();
        return;
      default:
        return; // unknown frame types are ignored (§4.1)
    }
  }

  // ---- writing

  protected write(buf: Buffer): boolean {
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(uncork, this);
    }
    return this.socket.write(buf);
  }

  /** @internal */
  uncork(): void {
    this.#corked = false;
    this.socket.uncork();
  }

  /** A header block, with FRAME_HEADER spare octets in front. Throws (nothing written) for a field HTTP/2 cannot carry. */
  protected encode(fields: readonly string[]): Buffer {
    const buf = Buffer.allocUnsafe(FRAME_HEADER + this.encoder.maxEncodedLength(fields));
    return buf.subarray(0, this.encoder.encode(fields, buf, FRAME_HEADER));
  }

  /**
   * An encoded block (from `encode`) as HEADERS, then CONTINUATION frames back to back when it is
   * larger than a frame (RFC 9113 §6.10).
   *
   * The connection's first block opens with a dynamic table size update to 0 (RFC 7541 §6.3).
   * Our encoder never uses the dynamic table, but the peer's decoder starts out assuming a
   * 4096-octet one. A peer that lowers SETTINGS_HEADER_TABLE_SIZE below that requires the encoder
   * to announce a table within the new size at the start of its next block (§4.2), and refuses
   * the block otherwise (nghttp2, Python hpack). Announcing 0 once, before anything else, meets
   * that for any value the peer sets, now or later, for one octet per connection.
   */
  protected writeHeaders(id: number, buf: Buffer, end: boolean): void {
    if (!this.#sentHeaderBlock) {
      this.#sentHeaderBlock = true;
      const b = Buffer.allocUnsafe(buf.length + 1);
      buf.copy(b, 0, 0, FRAME_HEADER);
      b[FRAME_HEADER] = 0x20;
      buf.copy(b, FRAME_HEADER + 1, FRAME_HEADER);
      buf = b;
    }
    const stop = buf.length;
    const len = stop - FRAME_HEADER;
    const endFlag = end ? FLAG_END_STREAM : 0;
    const mf = this.peerMaxFrame;
    if (len <= mf) {
      writeFrameHeader(buf, 0, len, HEADERS, endFlag | FLAG_END_HEADERS, id);
      this.write(buf);
      return;
    }
    writeFrameHeader(buf, 0, mf, HEADERS, endFlag, id);
    this.write(buf.subarray(0, FRAME_HEADER + mf));
    for (let off = FRAME_HEADER + mf; off < stop; ) {
      const n = Math.min(mf, stop - off);
      const h = Buffer.allocUnsafe(FRAME_HEADER);
      writeFrameHeader(h, 0, n, CONTINUATION, off + n === stop ? FLAG_END_HEADERS : 0, id);
      this.write(h);
      this.write(buf.subarray(off, off + n));
      off += n;
    }
  }

  /** Body bytes for an open stream: sent as far as the windows allow, the rest held. False: wait for `drained`. */
  protected queueData(s: S, chunk: Buffer): boolean {
    if (s.pending !== null) {
      s.pending.push(chunk);
      s.wantDrain = true;
      return false;
    }
    const sent = this.sendData(s, chunk);
    if (sent < chunk.length) {
      s.pending = [sent === 0 ? chunk : chunk.subarray(sent)];
      this.blocked.add(s);
      s.wantDrain = true;
      return false;
    }
    if (this.socket.writableNeedDrain) {
      s.wantDrain = true;
      return false;
    }
    return true;
  }

  /** Sends as much of `chunk` as the windows allow; returns how much. */
  protected sendData(s: S, chunk: Buffer): number {
    let off = 0;
    while (off < chunk.length) {
      const room = Math.min(s.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (room <= 0) break;
      const n = Math.min(room, chunk.length - off);
      if (n <= COPY_LIMIT) {
        const buf = Buffer.allocUnsafe(FRAME_HEADER + n);
        writeFrameHeader(buf, 0, n, DATA, 0, s.id);
        chunk.copy(buf, FRAME_HEADER, off, off + n);
        this.write(buf);
      } else {
        const h = Buffer.allocUnsafe(FRAME_HEADER);
        writeFrameHeader(h, 0, n, DATA, 0, s.id);
        this.write(h);
        this.write(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n));
      }
      s.sendWindow -= n;
      this.connSendWindow -= n;
      off += n;
    }
    return off;
  }

  /** Sends a stream's held bytes as far as the windows allow. */
  protected flushStream(s: S): void {
    const pending = s.pending;
    if (pending === null) return;
    while (pending.length > 0) {
      const chunk = pending[0] as Buffer;
      const sent = this.sendData(s, chunk);
      if (sent < chunk.length) {
        if (sent > 0) pending[0] = chunk.subarray(sent);
        this.blocked.add(s);
        return;
      }
      pending.shift();
    }
    s.pending = null;
    this.blocked.delete(s);
    this.afterFlush(s);
    if (s.wantDrain && !this.isClosed(s) && !this.socket.writableNeedDrain) {
      s.wantDrain = false;
      this.drained(s);
    }
  }

  /** The connection window grew: the held streams go on, oldest first. */
  protected flushBlocked(): void {
    if (this.blocked.size === 0) return;
    for (const s of [...this.blocked]) {
      if (this.connSendWindow <= 0) return;
      if (this.isClosed(s)) this.blocked.delete(s);
      else this.flushStream(s);
    }
  }

  /** The socket drained: streams that were told to wait and hold nothing more can write again. */
  protected notifyDrain(streams: Iterable<S>): void {
    // What was queued went out: the count of acknowledgements behind a full socket starts over
    // (a busy transfer keeps the socket backed up between drains, and a peer's periodic PINGs
    // must not add up across them).
    this.#queuedAcks = 0;
    for (const s of streams) {
      if (s.wantDrain && s.pending === null && !this.isClosed(s)) {
        s.wantDrain = false;
        this.drained(s);
      }
    }
  }

  // ---- reading

  /** Whole frames out of what the socket delivered (the rest is kept for the next read). */
  protected readFrames(data: Buffer): void {
    const buf = this.reader.push(data);
    if (buf === null) return;
    let off = 0;
    const total = buf.length;
    while (total - off >= FRAME_HEADER) {
      const len = (buf[off] as number) * 65536 + (buf[off + 1] as number) * 256 + (buf[off + 2] as number);
      if (len > DEFAULT_MAX_FRAME) {
        this.connectionError(FRAME_SIZE_ERROR, `frame of ${len} bytes over SETTINGS_MAX_FRAME_SIZE`);
        return;
      }
      if (total - off - FRAME_HEADER < len) break;
      const type = buf[off + 3] as number;
      const flags = buf[off + 4] as number;
      const id = buf.readUInt32BE(off + 5) & 0x7fff_ffff;
      const start = off + FRAME_HEADER;
      off = start + len;
      this.frame(type, flags, id, buf, start, off);
      if (this.halted) return;
    }
    if (off < total) this.reader.keep(off === 0 ? buf : buf.subarray(off));
  }

  /** HEADERS: padding and priority skipped; a block without END_HEADERS waits for its CONTINUATIONs. */
  protected onHeadersFrame(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) return this.connectionError(PROTOCOL_ERROR, 'HEADERS on stream 0');
    let p = start;
    let stop = end;
    if ((flags & FLAG_PADDED) !== 0) {
      if (stop - p < 1) return this.connectionError(PROTOCOL_ERROR, 'HEADERS padding');
      stop -= buf[p++] as number;
    }
    if ((flags & FLAG_PRIORITY) !== 0) {
      if (stop - p >= 4 && (buf.readUInt32BE(p) & 0x7fff_ffff) === id) return this.#selfDependent();
      p += 5;
    }
    if (p > stop) return this.connectionError(PROTOCOL_ERROR, 'HEADERS padding longer than the frame');
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if ((flags & FLAG_END_HEADERS) !== 0) {
      this.headerBlock(id, endStream, buf, p, stop);
      return;
    }
    this.contStream = id;
    this.#contEnd = endStream;
    this.#contChunks = [buf.subarray(p, stop)];
    this.#contBytes = stop - p;
    this.#contFrames = 0;
  }

  protected onContinuation(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (this.contStream === 0 || id !== this.contStream) return this.connectionError(PROTOCOL_ERROR, 'CONTINUATION without HEADERS');
    // Each frame's header octets count too: an endless run of empty CONTINUATION frames would
    // otherwise add a chunk per frame without ever reaching the limit (CVE-2024-27316 class).
    this.#contBytes += FRAME_HEADER + end - start;
    const over = this.headerBlockLimit(this.#contBytes, ++this.#contFrames);
    if (over !== null) return this.connectionError(over[0], over[1]);
    this.#contChunks.push(buf.subarray(start, end));
    if ((flags & FLAG_END_HEADERS) === 0) return;
    const block = Buffer.concat(this.#contChunks);
    this.#contChunks = [];
    this.contStream = 0;
    this.headerBlock(id, this.#contEnd, block, 0, block.length);
  }
}

function uncork(c: H2Endpoint<SendStream>): void {
  c.uncork();
}
