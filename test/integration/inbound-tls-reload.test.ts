import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/ward-error.ts';
import type { Inbound } from '../../src/inbound/server.ts';
import { createLogger } from '../../src/lib/log.ts';
import {
  makeSelfSignedCert,
  type RecordingApp,
  startH2App,
  startProxy,
  testConfig,
  type TestProxy,
  type TlsFiles,
} from '../unit/inbound/harness.ts';

/**
 * The sidecar's TLS listener takes a renewed certificate without a restart: a mesh's workload
 * certificates are short-lived (cert-manager, or Istio's 24 h), and the kubelet swaps the
 * mounted Secret's files at once. New connections get the new pair; a pair that does not load
 * keeps the previous one.
 */

let first: TlsFiles;
let second: TlsFiles;
let dir: string;
let app: RecordingApp;
let inbound: Inbound;
const lines: string[] = [];

/** The certificate a fresh TLS connection is served, trusting `ca`: its fingerprint, or the handshake's error code. */
function served(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      // the listener still negotiates h2 with the new pair (ALPN is the server's, not the pair's)
      resolve(s.alpnProtocol === 'h2' ? s.getPeerCertificate().fingerprint256 : `ALPN ${String(s.alpnProtocol)}`);
      s.destroy();
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

/** The SHA-256 fingerprint of a certificate file, as `getPeerCertificate` reports it. */
const fingerprint = (f: TlsFiles): string => new X509Certificate(readFileSync(f.certFile)).fingerprint256;

/** Replaces a file whole, in one rename, as the kubelet updates a Secret volume. */
function swapIn(from: string, to: string): void {
  copyFileSync(from, `${to}.tmp`);
  renameSync(`${to}.tmp`, to);
}

beforeAll(async () => {
  first = makeSelfSignedCert();
  second = makeSelfSignedCert();
  dir = mkdtempSync(join(tmpdir(), 'ward-tls-reload-'));
  mkdirSync(join(dir, 'live'));
  copyFileSync(first.certFile, join(dir, 'live', 'tls.crt'));
  copyFileSync(first.keyFile, join(dir, 'live', 'tls.key'));
  app = await startH2App();
  ({ inbound } = await startProxy(
    { ...testConfig({ upstreamPort: app.port, tls: { certFile: 'live/tls.crt', keyFile: 'live/tls.key' } }), baseDir: dir },
    { configFile: join(dir, 'sidecar.yaml'), certPollMs: 50, log: createLogger({ level: 'info', sink: { write: (l: string) => void lines.push(l) } }) },
  ));
});

afterAll(async () => {
  await inbound?.close();
  await app?.close();
  first?.cleanup();
  second?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('inbound TLS listener: certificate renewal', () => {
  it('serves the certificate it started with', async () => {
    expect(await served(inbound.ports.tls as number, readFileSync(first.certFile))).toBe(fingerprint(first));
  });

  it('serves the renewed certificate to new connections, without a restart', async () => {
    swapIn(second.keyFile, join(dir, 'live', 'tls.key'));
    swapIn(second.certFile, join(dir, 'live', 'tls.crt'));
    const port = inbound.ports.tls as number;
    let got = '';
    for (let i = 0; i < 100 && got !== fingerprint(second); i++) {
      await new Promise((r) => setTimeout(r, 50));
      got = await served(port, readFileSync(second.certFile));
    }
    expect(got).toBe(fingerprint(second));
    // a client that trusts only the old certificate no longer connects
    expect(await served(port, readFileSync(first.certFile))).not.toBe(fingerprint(first));
    expect(lines.some((l) => l.includes('TLS certificate reloaded'))).toBe(true);
  });

  it('keeps the last good pair when a renewal does not load', async () => {
    swapIn(first.keyFile, join(dir, 'live', 'tls.key')); // not the key of the certificate in place
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('reload failed')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(lines.some((l) => l.includes('TLS certificate reload failed; keeping the previous one'))).toBe(true);
    expect(await served(inbound.ports.tls as number, readFileSync(second.certFile))).toBe(fingerprint(second));
  });

  it('refuses to start with a file it cannot read, or a key that is not the certificate\'s, naming the setting', async () => {
    const start = (certFile: string, keyFile: string): Promise<TestProxy> =>
      startProxy({ ...testConfig({ upstreamPort: app.port, tls: { certFile, keyFile } }), baseDir: dir }, { configFile: join(dir, 'sidecar.yaml') });
    const missing = start('nowhere.crt', first.keyFile);
    await expect(missing).rejects.toBeInstanceOf(ConfigError);
    await expect(missing).rejects.toThrow(/sidecar\.yaml:1:1: inbound\.tls\.certFile: cannot read .*nowhere\.crt: ENOENT/);
    await expect(start(first.certFile, second.keyFile)).rejects.toThrow(/inbound\.tls: certificate and key do not load/);
  });
});
