import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../errors/ward-error.ts';
import { type CertPair, CertPairError, loadCertPair, watchCertPair } from '../../lib/cert-pair.ts';
import type { Logger } from '../../lib/log.ts';
import type { YamlLocator } from '../../lib/yaml-locate.ts';

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
  /** The config file's: an error is then at the field's line:column in it. */
  readonly locator?: YamlLocator | undefined;
  readonly log: Logger;
  /** How often the files are polled for a change (`fs.watchFile`). */
  readonly pollMs: number;
}

export function servingCertificate(o: ServingCertificateOptions): ServingCertificate {
  const certPath = resolve(o.baseDir, o.certFile);
  const keyPath = resolve(o.baseDir, o.keyFile);

  const identity = (p: CertPair): IdentityUpdate => ({ certificate: p.cert, privateKey: p.key });
  let current: IdentityUpdate;
  try {
    current = identity(loadCertPair(certPath, keyPath));
  } catch (err) {
    if (!(err instanceof CertPairError)) throw err;
    // With the config file's positions: at the field that names the file (the pair itself: at
    // `tls:`), the file named in the message. Without them: named as the file, and the field.
    if (o.locator !== undefined) {
      throw new ConfigError([o.locator.issue(err.part === 'pair' ? ['tls'] : ['tls', err.part], err.message, err.part === 'pair' ? 'key' : 'value')]);
    }
    const message = err.part === 'pair' ? err.message : `cannot read: ${err.detail}`;
    throw new ConfigError([{ file: err.file, line: 1, column: 1, path: err.part === 'pair' ? 'tls' : `tls.${err.part}`, message }]);
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

  const stopWatching = watchCertPair(certPath, keyPath, o.pollMs, 'control-plane certificate', o.log, (pair) => {
    const next = identity(pair);
    if (next.certificate.equals(current.certificate) && next.privateKey.equals(current.privateKey)) return false;
    current = next;
    for (const l of listeners) l(current);
    return true;
  });

  // grpc-js names this function's parameters the other way round from the class it builds: the
  // first provider given is the server's identity, the second (null: no client certificates)
  // the CA it would verify clients with (test/integration/controlplane-tls.test.ts holds it to that).
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, null, false);
  return {
    credentials,
    close: stopWatching,
  };
}
