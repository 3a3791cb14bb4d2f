/**
 * What the load benchmark runs besides h2load: signing keys and tokens, a minimal OIDC issuer
 * (discovery + JWKS only), an OTLP/gRPC sink for the sidecar's telemetry, the app, and the
 * process handling shared by every peer (start pinned with taskset, read CPU time and peak RSS
 * from /proc, stop by pid).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, type KeyObject, randomUUID, sign } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import http2, { type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// ---- keys and tokens

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicPem: string;
  readonly jwk: Record<string, unknown>;
}

export function newRsaKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `bench-${randomUUID().slice(0, 8)}`;
  return {
    kid,
    privateKey: createPrivateKey(privateKey.export({ format: 'pem', type: 'pkcs8' })),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
  };
}

const b64url = (v: string | Buffer): string => Buffer.from(v).toString('base64url');

/** An RFC 9068 access token, RS256. */
export function mintToken(key: SigningKey, claims: Record<string, unknown>): string {
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: key.kid }));
  const payload = b64url(JSON.stringify(claims));
  const sig = sign('sha256', Buffer.from(`${header}.${payload}`), key.privateKey);
  return `${header}.${payload}.${b64url(sig)}`;
}

// ---- the issuer (discovery + JWKS) and the OTLP sink, in the harness process

export interface Served {
  readonly port: number;
  close(): Promise<void>;
}

export async function startIssuer(key: SigningKey): Promise<Served & { readonly issuer: string; readonly jwksUri: string }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const jwksUri = `${issuer}/jwks`;
  const discovery = JSON.stringify({
    issuer,
    jwks_uri: jwksUri,
    token_endpoint: `${issuer}/token`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
  });
  const jwks = JSON.stringify({ keys: [key.jwk] });
  const server = http.createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration') res.writeHead(200, { 'content-type': 'application/json' }).end(discovery);
    else if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(jwks);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    port,
    issuer,
    jwksUri,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Accepts every OTLP/gRPC Export and answers an empty (valid) response; counts bytes. */
export async function startOtlpSink(): Promise<Served & { readonly stats: { calls: number; bytes: number } }> {
  const port = await freePort();
  const stats = { calls: 0, bytes: 0 };
  const EMPTY = Buffer.alloc(5);
  const server = http2.createServer();
  server.on('stream', (stream: ServerHttp2Stream) => {
    stats.calls++;
    stream.on('data', (d: Buffer) => (stats.bytes += d.length));
    stream.on('end', () => {
      if (stream.destroyed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(EMPTY);
    });
    stream.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { port, stats, close: () => new Promise<void>((r) => server.close(() => r())) };
}

// ---- processes

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `cmd args` under `taskset -c cpus` (taskset execs, so the pid is the command's). */
export function startPinned(name: string, cpus: string, cmd: string, args: readonly string[], logFile: string, env?: NodeJS.ProcessEnv): Proc {
  const child = spawn('taskset', ['-c', cpus, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let gone = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((gone = true), resolve())));
  if (child.pid === undefined) throw new Error(`${name}: spawn failed`);
  const pid = child.pid;
  return {
    name,
    pid,
    child,
    exited: () => gone,
    async stop(graceMs = 5000): Promise<void> {
      if (gone) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(t);
    },
  };
}

/** The process and its descendants (cluster workers). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i] as number;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        for (const c of readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').trim().split(/\s+/)) if (c !== '') out.push(Number(c));
      } catch {
        // gone
      }
    }
  }
  return out;
}

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86-64

/** utime + stime of the process tree, in µs. */
export function cpuMicros(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(rest[11]) + Number(rest[12]);
    } catch {
      // gone
    }
  }
  return (ticks * 1e6) / CLK_TCK;
}

/** The sum over the process tree of `fields` of /proc/<pid>/status, in kB. */
function statusKb(pid: number, ...fields: readonly string[]): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      for (const field of fields) total += Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return total;
}

/** Peak resident set (VmHWM) of the process tree, in kB (summed over its processes). */
export const peakRssKb = (pid: number): number => statusKb(pid, 'VmHWM');
/** Current resident set (VmRSS) of the process tree, in kB. */
export const rssKb = (pid: number): number => statusKb(pid, 'VmRSS');
/**
 * The resident pages of the process tree that are its own, in kB: anonymous and shared-memory
 * pages (`RssAnon` + `RssShmem`), without the file-backed ones (`RssFile`: the program's binary
 * and libraries, which every process running the same image shares through the page cache).
 * Linux keeps no high-water mark for it, so callers poll it.
 */
export const privateKb = (pid: number): number => statusKb(pid, 'RssAnon', 'RssShmem');

export function hasCommand(cmd: string): boolean {
  for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) if (existsSync(`${dir}/${cmd}`)) return true;
  return false;
}
