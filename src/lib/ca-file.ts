import { readFileSync } from 'node:fs';
import type { Logger } from './log.ts';

/**
 * A CA bundle read again each time a connection is made, so that a CA rotation reaches a
 * running process: the mounted ConfigMap first carries the new CA next to the old one
 * (deploy/scripts/control-plane-cert.sh --new-ca), the server then switches to a certificate
 * the new CA signed, and the next connection verifies it without a restart. A file that cannot
 * be read keeps the bundle read last (logged); `first` is the one read at start, where an
 * unreadable file is a config error instead.
 */
export function rereadCaFile(path: string, first: Buffer, log: Logger): () => Buffer {
  let last = first;
  return () => {
    try {
      last = readFileSync(path);
    } catch (err) {
      log.warn('cannot read the CA file again; keeping the one read last', { caFile: path, err });
    }
    return last;
  };
}
