import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../errors/ward-error.ts';
import type { Logger } from '../../lib/log.ts';

/**
 * The control plane's serving certificate, re-read when its files change: cert-manager (or
 * deploy/scripts/control-plane-cert.sh run again) renews the Secret long before it expires, and
 * the kubelet swaps the mounted files atomically, so a rotation needs no restart. New
 * connections get the new pair; open ones keep the one they negotiated.
 *
 * grpc-js updates a bound server's TLS context through a `CertificateProvider` (its
 * `experimental` API). A pair that does not load (half written, cert and key not matching) is
 * logged and the previous one kept; the next change retries.
 */

type IdentityUpdate = { certificate: Buffer; privateKey: Buffer };
type IdentityListener = (update: IdentityUpdate | null) => void;

export interface ServingCertificate {
  readonly credentials: grpc.ServerCredentials;
  /** Stops watching the files. */
  close(): void;
}

export interface ServingCertificateOptions {
  readonly baseDir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly log: Logger;
  /** How often the files are polled for a change (`fs.watchFile`). */
  readonly pollMs: number;
}

export function servingCertificate(o: ServingCertificateOptions): ServingCertificate {
  const certPath = resolve(o.baseDir, o.certFile);
  const keyPath = resolve(o.baseDir, o.keyFile);

  const readPair = (): IdentityUpdate => {
    const pair = { certificate: readFileSync(certPath), privateKey: readFileSync(keyPath) };
    // Throws for unparsable PEM or a key that does not match the certificate: what the TLS
    // server itself would refuse, found before it is handed over.
    createSecureContext({ cert: pair.certificate, key: pair.privateKey });
    return pair;
  };

  let current: IdentityUpdate;
  try {
    current = readPair();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const path = (err as NodeJS.ErrnoException).path;
    if (path !== undefined) {
      throw new ConfigError([{ file: path, line: 1, column: 1, path: path === certPath ? 'tls.certFile' : 'tls.keyFile', message: `cannot read: ${code ?? 'error'}` }]);
    }
    // Both files read: the pair itself is bad.
    throw new ConfigError([{ file: certPath, line: 1, column: 1, path: 'tls', message: `certificate and key do not load: ${(err as Error).message}` }]);
  }

  const listeners = new Set<IdentityListener>();
  const provider: grpc.experimental.CertificateProvider = {
    addIdentityCertificateListener(l) {
      listeners.add(l);
      // Later, not now: grpc-js starts listening to its provider before it registers the
      // server that the update must reach.
      queueMicrotask(() => {
        if (listeners.has(l)) l(current);
      });
    },
    removeIdentityCertificateListener(l) {
      listeners.delete(l);
    },
    // No client certificates: identity comes from the bearer token.
    addCaCertificateListener() {},
    removeCaCertificateListener() {},
  };

  const onChange = (): void => {
    let next: IdentityUpdate;
    try {
      next = readPair();
    } catch (err) {
      o.log.warn('control-plane certificate reload failed; keeping the previous one', { certFile: certPath, err });
      return;
    }
    if (next.certificate.equals(current.certificate) && next.privateKey.equals(current.privateKey)) return;
    current = next;
    for (const l of listeners) l(current);
    o.log.info('control-plane certificate reloaded', { certFile: certPath });
  };
  watchFile(certPath, { interval: o.pollMs, persistent: false }, onChange);
  watchFile(keyPath, { interval: o.pollMs, persistent: false }, onChange);

  // grpc-js names this function's parameters the other way round from the class it builds: the
  // first provider given is the server's identity, the second (null: no client certificates)
  // the CA it would verify clients with (test/integration/controlplane-tls.test.ts holds it to that).
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, null, false);
  return {
    credentials,
    close() {
      unwatchFile(certPath, onChange);
      unwatchFile(keyPath, onChange);
    },
  };
}
