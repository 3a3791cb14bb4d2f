import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from './log.ts';

/**
 * A TLS server's certificate and key as files (a mounted Secret): read and checked together, and
 * re-read when either changes, so a renewed certificate needs no restart. The injector's HTTPS
 * server, the sidecar's TLS listener and the control plane share this.
 */

export interface CertPair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Which part failed: a file that cannot be read (`detail`: its error code), or a pair that does not load. */
export class CertPairError extends Error {
  readonly part: 'certFile' | 'keyFile' | 'pair';
  readonly file: string;
  readonly detail: string;

  constructor(part: 'certFile' | 'keyFile' | 'pair', file: string, detail: string) {
    super(part === 'pair' ? `certificate and key do not load: ${detail}` : `cannot read ${file}: ${detail}`);
    this.part = part;
    this.file = file;
    this.detail = detail;
  }
}

/** Reads both files and checks that they load together (what the TLS server itself would refuse). */
export function loadCertPair(certFile: string, keyFile: string): CertPair {
  const read = (part: 'certFile' | 'keyFile', file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new CertPairError(part, file, (err as NodeJS.ErrnoException).code ?? 'error');
    }
  };
  const pair = { cert: read('certFile', certFile), key: read('keyFile', keyFile) };
  try {
    createSecureContext(pair);
  } catch (err) {
    throw new CertPairError('pair', certFile, (err as Error).message);
  }
  return pair;
}

/**
 * Polls both files every `pollMs` (the kubelet swaps a Secret's files at once) and hands a pair
 * that loads to `apply`, which returns false when there was nothing to change. A pair that does
 * not load (half written, not matching) is logged and the one in use kept; the next change
 * retries. `what` names it in the log (`<what> reloaded`). Returns the function that stops.
 */
export function watchCertPair(certFile: string, keyFile: string, pollMs: number, what: string, log: Logger, apply: (pair: CertPair) => boolean): () => void {
  const onChange = (): void => {
    let changed: boolean;
    try {
      changed = apply(loadCertPair(certFile, keyFile));
    } catch (err) {
      log.warn(`${what} reload failed; keeping the previous one`, { certFile, err });
      return;
    }
    if (changed) log.info(`${what} reloaded`, { certFile });
  };
  watchFile(certFile, { interval: pollMs, persistent: false }, onChange);
  watchFile(keyFile, { interval: pollMs, persistent: false }, onChange);
  return () => {
    unwatchFile(certFile, onChange);
    unwatchFile(keyFile, onChange);
  };
}
