import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';

/**
 * What the differential and round-trip fuzz tests share: bodies whose every octet is known
 * (`pattern`), their digests, and a Python peer spoken to one JSON line at a time.
 */

/** `n` octets i % 251 (i from 0), as the Python peers make them too. */
export function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A Python script (Debian's /usr/bin/python3, where python3-h2 and python3-hpack live) that
 * answers each JSON request line on stdin with one JSON line on stdout, in order. A script that
 * dies fails the requests waiting on it, with its stderr, instead of leaving them to a timeout.
 */
export class PythonPeer {
  readonly #script: string;
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly #waiting: { resolve: (line: string) => void; reject: (err: Error) => void }[] = [];
  #stderr = '';

  constructor(script: string) {
    this.#script = script;
    this.#proc = spawn('/usr/bin/python3', [script]);
    this.#proc.stderr.on('data', (d: Buffer) => (this.#stderr += d.toString()));
    createInterface({ input: this.#proc.stdout }).on('line', (line) => this.#waiting.shift()?.resolve(line));
    this.#proc.on('exit', () => {
      for (const w of this.#waiting.splice(0)) w.reject(this.#died());
    });
  }

  #died(): Error {
    return new Error(`the Python peer ${this.#script} exited: ${this.#stderr}`);
  }

  request<T>(req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.#proc.exitCode !== null) {
        reject(this.#died());
        return;
      }
      this.#waiting.push({ resolve: (line) => resolve(JSON.parse(line) as T), reject });
      this.#proc.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  /** Resolves once every request handed over has been answered (a run fast-check gave up on included). */
  async idle(): Promise<void> {
    while (this.#waiting.length > 0) await new Promise((r) => setTimeout(r, 20));
  }

  close(): void {
    this.#proc.stdin.end();
  }
}
