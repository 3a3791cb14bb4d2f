import { createHash } from 'node:crypto';
import { type FSWatcher, statSync, watch } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError, formatIssue } from '../errors/ward-error.ts';
import type { Logger } from '../lib/log.ts';
import { parsePolicyText, readPolicyText } from './load.ts';
import type { CompiledPolicy } from './model.ts';

/**
 * The policy of one service as a watch (linkerd policy client; xDS ACK/NACK): every request
 * reads `current()`, so a new version reaches open HTTP/2 connections on their next call.
 *
 * - At start-up an invalid file throws (misconfiguration fails loudly, the sidecar does not start).
 * - Later, a valid new version replaces the snapshot in one assignment and is logged with its
 *   version; an invalid one is refused, its errors logged as file:line:column, and the last good
 *   version stays in force (`lastError()` reports it until a good version arrives).
 * - Change detection: fs.watch on the directory (it sees atomic rename-replace and Kubernetes
 *   ConfigMap symlink swaps, which never touch the file's own name), plus a periodic stat poll
 *   for filesystems where fs.watch is silent; both only schedule a debounced check, which
 *   re-reads the file and does nothing when the content hash is unchanged.
 */
export interface PolicySource {
  current(): CompiledPolicy | null;
  lastError(): ConfigError | null;
  close(): void;
}

export interface FilePolicySourceOptions {
  /** The sidecar's service: a policy naming another service is refused. */
  readonly service: string;
  readonly log: Logger;
  /** Called after each swap to a new version (not for the initial load). */
  readonly onChange?: (p: CompiledPolicy) => void;
  /** Stat-poll period (default 2000 ms). */
  readonly pollMs?: number;
  /** Quiet time before a change is read, so a file written in several steps is read once (default 100 ms). */
  readonly debounceMs?: number;
  /** Where `hmacSecretEnv` is read (default: the process environment). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Use fs.watch (default true); false leaves only the stat poll (filesystems where watch misbehaves). */
  readonly watch?: boolean;
}

export function createFilePolicySource(file: string, opts: FilePolicySourceOptions): PolicySource {
  const { log } = opts;
  const loadOpts = { service: opts.service, ...(opts.env === undefined ? {} : { env: opts.env }) };
  const text = readPolicyText(file);
  let current: CompiledPolicy = parsePolicyText(text, file, loadOpts);
  let lastError: ConfigError | null = null;
  let seenHash = sha256(text);
  let seenStat = statKey(file);
  let closed = false;
  let debounce: NodeJS.Timeout | undefined;
  log.info('policy loaded', { file, version: current.version, rules: current.rules.length, dryRun: current.dryRun });

  const check = (): void => {
    debounce = undefined;
    if (closed) return;
    seenStat = statKey(file);
    let next: string;
    try {
      next = readPolicyText(file);
    } catch (err) {
      // Mid-replace, or deleted: keep serving the last good version.
      lastError = err as ConfigError;
      log.warn('policy file unreadable; keeping the last good version', { file, version: current.version, error: (err as Error).message });
      seenHash = '';
      return;
    }
    const hash = sha256(next);
    if (hash === seenHash) return;
    seenHash = hash;
    let p: CompiledPolicy;
    try {
      p = parsePolicyText(next, file, loadOpts);
    } catch (err) {
      // Whatever went wrong, the new version is refused and the last good one stays: a throw
      // from this timer would end the process.
      const refused = err instanceof ConfigError ? err : new ConfigError([{ file, line: 1, column: 1, path: '', message: `could not be checked: ${(err as Error).message}` }]);
      lastError = refused;
      log.error('policy update refused; keeping the last good version', {
        file,
        version: current.version,
        errors: refused.issues.map(formatIssue),
      });
      return;
    }
    lastError = null;
    if (p.version === current.version) return; // comments or formatting only
    const previous = current.version;
    current = p;
    log.info('policy updated', { file, version: p.version, previous, rules: p.rules.length, dryRun: p.dryRun });
    try {
      opts.onChange?.(p);
    } catch (err) {
      log.error('policy onChange handler failed', { version: p.version, error: err });
    }
  };

  const schedule = (): void => {
    if (closed) return;
    if (debounce !== undefined) clearTimeout(debounce);
    debounce = setTimeout(check, opts.debounceMs ?? 100);
    debounce.unref();
  };

  let watcher: FSWatcher | undefined;
  if (opts.watch !== false) {
    try {
      watcher = watch(dirname(file), { persistent: false }, () => schedule());
      watcher.on('error', (err) => {
        log.warn('policy directory watch failed; relying on polling', { file, error: err });
        watcher?.close();
        watcher = undefined;
      });
    } catch (err) {
      log.warn('cannot watch the policy directory; relying on polling', { file, error: err });
    }
  }

  const poll = setInterval(() => {
    const s = statKey(file);
    if (s !== seenStat) schedule();
  }, opts.pollMs ?? 2000);
  poll.unref();

  return {
    current: () => current,
    lastError: () => lastError,
    close: () => {
      closed = true;
      clearInterval(poll);
      if (debounce !== undefined) clearTimeout(debounce);
      watcher?.close();
      watcher = undefined;
    },
  };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** What a change of the file would change: identity (rename-replace), size, modification time. */
function statKey(file: string): string {
  try {
    const s = statSync(file);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'missing';
  }
}
