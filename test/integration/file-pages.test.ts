import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createPageReleaser } from '../../src/lib/file-pages.ts';
import { sidecarMemory } from '../support/sidecar-process.ts';

/**
 * The file pages ward trims (src/lib/file-pages.ts, native/file-pages.c), with
 * the addon `npm ci` built (bin/build-native.js; CI installs gcc for it): a process that
 * released them still runs everything it runs, from pages read back as they are used.
 */

const ADDON = fileURLToPath(new URL('../../native/build/file-pages.node', import.meta.url));
const PAGES = new URL('../../src/lib/file-pages.ts', import.meta.url).href;
const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

/**
 * A process that releases its pages, does work that needs the binary's code again, then trims
 * (the ranges it found, again) and works once more.
 */
const CHILD = `
import { readFileSync } from 'node:fs';
import { createPageReleaser } from ${JSON.stringify(PAGES)};
const pages = createPageReleaser(${JSON.stringify(ADDON)});
const status = () => {
  const s = readFileSync('/proc/self/status', 'latin1');
  const kb = (name) => Number(new RegExp(name + ':\\\\s+(\\\\d+) kB').exec(s)[1]);
  return { file: kb('RssFile'), anon: kb('RssAnon') };
};
// Work over code the process had not run since it started, and over code it had.
const work = async () => {
  const crypto = await import('node:crypto');
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const data = Buffer.from('signed by the child');
  const signature = crypto.sign('sha256', data, privateKey);
  const verified = crypto.verify('sha256', data, publicKey, signature) && !crypto.verify('sha256', Buffer.from('other'), publicKey, signature);
  const http2 = await import('node:http2');
  const server = http2.createServer((req, res) => res.end('pong ' + req.url));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect('http://127.0.0.1:' + server.address().port);
  const body = await new Promise((resolve, reject) => {
    const req = client.request({ ':path': '/ping' });
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (text += d));
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
  client.close();
  await new Promise((r) => server.close(r));
  const zlib = await import('node:zlib');
  return { verified, body, roundTrip: zlib.gunzipSync(zlib.gzipSync('x'.repeat(10000))).length };
};
const before = status();
const released = pages.release({});
const after = status();
const first = await work();
const worked = status();
pages.trim({});
const trimmed = status();
const second = await work();
process.stdout.write(JSON.stringify({ before, released, after, worked, trimmed, first, second, report: pages.report() }));
`;

describe('trimming file pages (a real process, the built addon)', () => {
  it('drops the binary pages the process started with, goes on working from the file, and trims what came back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-pages-'));
    const script = join(dir, 'child.mjs');
    writeFileSync(script, CHILD);
    type Rss = { file: number; anon: number };
    type Work = { verified: boolean; body: string; roundTrip: number };
    const out = JSON.parse(execFileSync(process.execPath, [script], { encoding: 'utf8' })) as {
      before: Rss;
      released: number;
      after: Rss;
      worked: Rss;
      trimmed: Rss;
      first: Work;
      second: Work;
      report: { state: string; releases: number; releasedBytes: number; trims: number; refused: number; detail: string | null };
    };
    // A bare node has ~40 MB of its binary resident once started; most of it goes.
    expect(out.released).toBeGreaterThan(20_000);
    expect(out.after.file).toBeLessThan(out.before.file - 20_000);
    // Nothing private is dropped: the process's own memory stays (within what reading smaps allocates).
    expect(out.after.anon).toBeGreaterThanOrEqual(out.before.anon - 1024);
    // The work paged code in again, and the trim dropped it again.
    expect(out.worked.file).toBeGreaterThan(out.after.file + 1024);
    expect(out.trimmed.file).toBeLessThan(out.worked.file - 1024);
    for (const w of [out.first, out.second]) expect(w).toEqual({ verified: true, body: 'pong /ping', roundTrip: 10_000 });
    expect(out.report).toEqual({ state: 'trimming', detail: null, releases: 1, releasedBytes: out.released * 1024, trims: 1, refused: 0 });
  });

  it('a trim drops only the ranges still mapped as they were found', () => {
    // smaps names a range nothing is mapped at (madvise says ENOMEM, counted as refused); maps
    // says, in turn, that it is gone, that something else is there now, and that it is back.
    const range = '0000000000001000-0000000000002000 r--p 00000000 fe:00 42';
    let maps = '';
    const files = {
      read: (path: string): string =>
        path === '/proc/self/smaps' ? `${range}                     /opt/lib/gone.so\nRss:                   4 kB\nAnonymous:             0 kB\n` : maps,
    };
    const pages = createPageReleaser(ADDON, files);
    expect(pages.release({})).toBe(0);
    expect(pages.report()).toMatchObject({ state: 'trimming', releases: 1, refused: 1, detail: 'madvise refused /opt/lib/gone.so (errno 12)' });
    maps = '0000000000001000-0000000000002000 r--p 00000000 fe:00 43 /opt/lib/other.so\n';
    pages.trim({});
    expect(pages.report()).toMatchObject({ trims: 1, refused: 1 });
    // Once dropped from the list, a range is not tried again until a release finds it.
    maps = `${range} /opt/lib/gone.so\n`;
    pages.trim({});
    expect(pages.report()).toMatchObject({ trims: 1, refused: 1 });
    expect(pages.release({})).toBe(0);
    pages.trim({});
    expect(pages.report()).toMatchObject({ releases: 2, trims: 2, refused: 3 });
  });

  it('the addon refuses what is not a whole-page range of user space, and hands the rest to madvise', () => {
    const { dontneed } = createRequire(import.meta.url)(ADDON) as { dontneed: (...a: unknown[]) => number };
    const EINVAL = 22;
    const ENOMEM = 12;
    expect(dontneed(4097, 8192)).toBe(EINVAL); // not page-aligned
    expect(dontneed(8192, 4096)).toBe(EINVAL); // empty or reversed
    expect(dontneed(0, 4096)).toBe(EINVAL);
    expect(dontneed(2 ** 48, 2 ** 48 + 4096)).toBe(EINVAL); // beyond user space
    expect(dontneed(4096.5, 8192)).toBe(EINVAL);
    expect(dontneed('4096', 8192)).toBe(EINVAL); // not numbers
    expect(dontneed(4096)).toBe(EINVAL);
    // A well-formed range nothing is mapped at (below mmap_min_addr): madvise itself says ENOMEM.
    expect(dontneed(4096, 8192)).toBe(ENOMEM);
  });
});

type FilePages = { state: string; releases: number; releasedBytes: number; trims: number; refused: number };

/** Starts `ward sidecar` with `env`, reads its admin `/memory` once started, and stops it. */
async function filePagesOf(env: NodeJS.ProcessEnv): Promise<FilePages> {
  const files = {
    'policy.yaml': 'apiVersion: ward.dev/v1\nkind: Policy\nservice: orders\nissuers:\n  - issuer: http://127.0.0.1:9\n    audiences: [urn:ward:orders]\n    algorithms: [RS256]\nrules:\n  - name: readers\n    action: allow\n    match:\n      grpc: [/ward.demo.v1.Orders/GetOrder]\n',
    'sidecar.yaml': 'service: orders\ninbound: { listen: { host: 127.0.0.1, port: 0 } }\nupstream: { url: "http://127.0.0.1:9" }\nadmin: { host: 127.0.0.1, port: 0 }\npolicy: { file: policy.yaml }\ntelemetry: { enabled: false }\ndrainTimeoutMs: 100\n',
  };
  // The release after start runs right after the "sidecar started" line.
  const memory = (await sidecarMemory(files, env, 200)) as { filePages: FilePages };
  return memory.filePages;
}

describe('ward sidecar trims its file pages', () => {
  it('before it loads its modules and once started; /memory says what it dropped', async () => {
    const env: NodeJS.ProcessEnv = {};
    const pages = await filePagesOf({ ...env, WARD_TRIM_FILE_PAGES: '' });
    expect(pages.state).toBe('trimming');
    expect(pages.releases).toBe(2);
    expect(pages.releasedBytes).toBeGreaterThan(30 * 1024 * 1024);
    expect(pages.refused).toBe(0);
  });

  it('WARD_TRIM_FILE_PAGES=off keeps them', async () => {
    expect(await filePagesOf({ WARD_TRIM_FILE_PAGES: 'off' })).toMatchObject({ state: 'off', releases: 0, releasedBytes: 0 });
  });

  it('refuses any other value: status 2 and the value named', () => {
    const r = spawnSync(process.execPath, [WARD, 'policy', 'check', '--help'], { env: { ...process.env, WARD_TRIM_FILE_PAGES: 'no' }, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("ward: WARD_TRIM_FILE_PAGES: 'no' is neither on nor off");
  });
});
