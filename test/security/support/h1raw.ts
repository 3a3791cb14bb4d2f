import net from 'node:net';

/**
 * HTTP/1.1 over a raw socket: the bytes go out exactly as written (bare LF, obs-fold, duplicate
 * framing fields, pipelined requests), and every response that comes back is split into status
 * line and header fields.
 */

export interface H1Reply {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
}

export interface H1Exchange {
  /** Everything the server sent, latin1. */
  readonly raw: string;
  /** Each response head found in `raw`, in order. */
  readonly replies: readonly H1Reply[];
  /** The server closed the connection (rather than going quiet). */
  readonly closedByServer: boolean;
}

/** Sends `text` (in `parts` pieces with a pause between, when given) and collects replies until the server closes or is quiet for `quietMs`. */
export function h1raw(port: number, text: string | readonly string[], quietMs = 200): Promise<H1Exchange> {
  const parts = typeof text === 'string' ? [text] : text;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let closedByServer = false;
    let done = false;
    const s = net.connect(port, '127.0.0.1');
    let t: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (t !== undefined) clearTimeout(t);
      t = setTimeout(() => finish(), quietMs);
    };
    const finish = (): void => {
      if (done) return;
      done = true;
      if (t !== undefined) clearTimeout(t);
      s.destroy();
      const raw = Buffer.concat(chunks).toString('latin1');
      resolve({ raw, replies: parseReplies(raw), closedByServer });
    };
    s.on('connect', () => {
      void (async () => {
        for (const p of parts) {
          if (s.destroyed) return;
          s.write(p, 'latin1');
          if (parts.length > 1) await new Promise((r) => setTimeout(r, 30));
        }
        arm();
      })();
    });
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      arm();
    });
    s.on('end', () => {
      closedByServer = true;
      finish();
    });
    s.on('error', () => {
      closedByServer = true; // ECONNRESET / EPIPE: the server tore the connection down
      finish();
    });
    s.on('close', () => {
      closedByServer = true;
      finish();
    });
  });
}

export function parseReplies(raw: string): H1Reply[] {
  const out: H1Reply[] = [];
  const re = /HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n/g;
  for (let m = re.exec(raw); m !== null; m = re.exec(raw)) {
    const headers: Record<string, string> = {};
    for (const line of (m[2] ?? '').split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    out.push({ status: Number(m[1]), headers });
  }
  return out;
}
