import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError, formatIssue } from '../errors/ward-error.ts';
import { watchFileSet } from '../lib/file-watch.ts';
import type { Logger } from '../lib/log.ts';
import { changedReferences, referenceDigest, referencedFiles } from './compile.ts';
import { compileValidated, readPolicyText, validatePolicyText } from './load.ts';
import type { CompiledPolicy } from './model.ts';
import type { PolicyFile } from './schema.ts';

/**
 * The policy of one service as a watch (linkerd policy client; xDS ACK/NACK): every request
 * reads `current()`, so a new version reaches open HTTP/2 connections on their next call.
 *
 * - At start-up an invalid file throws (misconfiguration fails loudly, the sidecar does not start).
 * - Later, a valid new version replaces the snapshot in one assignment and is logged with its
 *   version; an invalid one is refused, its errors logged as file:line:column, and the last good
 *   version stays in force (`lastError()` reports it until a good version arrives).
 * - Change detection: the policy file and every file it references (`hmacSecretFile`: compile.ts
 *   `referencedFiles`), each by fs.watch on its directory (it sees atomic rename-replace and
 *   Kubernetes ConfigMap and Secret symlink swaps, which never touch the file's own name) plus a
 *   periodic stat poll for filesystems where fs.watch is silent (lib/file-watch.ts). Both only
 *   schedule a debounced check, which re-reads the policy text and the referenced files and does
 *   nothing when none of them changed.
 * - A referenced file that changed (a rotated secret) compiles the policy again and swaps it in
 *   although its text, and so its `version`, are the same: the version names the policy text as
 *   the control plane and every replica know it, never a secret (which the control plane does
 *   not hold, and which a version derived from it could leak). That swap is logged as
 *   `policy updated` with `reason: referenced file changed` and the file's path (never its
 *   content). A new secret that cannot be used (unreadable, too short, empty) is refused like an
 *   invalid text: the policy with the previous secret stays, `lastError()` says why.
 * - While the latest text is refused, a change of a referenced file compiles the text in force
 *   again, so a secret rotation is not held up by a broken edit of the policy (`lastError()`
 *   still reports that edit).
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

  /** A policy text that passed validation, and what it references. */
  interface Base {
    readonly text: string;
    readonly parsed: PolicyFile;
    readonly refs: readonly string[];
  }
  const validated = (text: string): Base => {
    const parsed = validatePolicyText(text, file, loadOpts);
    return { text, parsed, refs: [...new Set(referencedFiles(parsed, file).map((r) => r.file))] };
  };

  const text = readPolicyText(file);
  /** The text of the policy in force. */
  let inForce = validated(text);
  /** What a change of a referenced file compiles: the latest text if valid, else `inForce`. */
  let base = inForce;
  // One read of each referenced file serves both the comparison and the compilation.
  const reads = readAll(base.refs);
  let current: CompiledPolicy = compileValidated(base.parsed, base.text, file, { ...loadOpts, readFile: readerOf(reads) });
  let seenText = sha256(text);
  let seenState = stateKey(base, reads);
  let textError: ConfigError | null = null;
  let compileError: ConfigError | null = null;
  let closed = false;
  log.info('policy loaded', { file, version: current.version, rules: current.rules.length, dryRun: current.dryRun, ...referencing(base) });

  const refuse = (err: unknown): ConfigError => {
    // Whatever went wrong, the new version is refused and the last good one stays: a throw
    // from this timer would end the process.
    const refused = err instanceof ConfigError ? err : new ConfigError([{ file, line: 1, column: 1, path: '', message: `could not be checked: ${(err as Error).message}` }]);
    log.error('policy update refused; keeping the last good version', {
      file,
      version: current.version,
      errors: refused.issues.map(formatIssue),
    });
    return refused;
  };

  const check = (): void => {
    if (closed) return;
    let next: string;
    try {
      next = readPolicyText(file);
    } catch (err) {
      // Mid-replace, or deleted: keep serving the last good version.
      textError = err as ConfigError;
      log.warn('policy file unreadable; keeping the last good version', { file, version: current.version, error: (err as Error).message });
      seenText = '';
      return;
    }
    const hash = sha256(next);
    if (hash !== seenText) {
      seenText = hash;
      try {
        base = validated(next);
        textError = null;
      } catch (err) {
        textError = refuse(err);
        // Not a version written before this one and never applied: the one in force.
        base = inForce;
      }
    }
    files.set([file, ...base.refs]);
    const reads = readAll(base.refs);
    const state = stateKey(base, reads);
    if (state === seenState) return;
    seenState = state;
    let p: CompiledPolicy;
    try {
      p = compileValidated(base.parsed, base.text, file, { ...loadOpts, readFile: readerOf(reads) });
    } catch (err) {
      compileError = refuse(err);
      return;
    }
    compileError = null;
    inForce = base;
    const changed = changedReferences(current, p);
    if (p.version === current.version && changed.length === 0) return; // comments or formatting only
    const previous = current.version;
    current = p;
    log.info('policy updated', {
      file,
      version: p.version,
      previous,
      // The version names the policy text: a new secret alone leaves it as it was.
      reason: p.version === previous ? 'referenced file changed' : 'policy changed',
      ...(changed.length === 0 ? {} : { referencedFiles: changed }),
      rules: p.rules.length,
      dryRun: p.dryRun,
    });
    try {
      opts.onChange?.(p);
    } catch (err) {
      log.error('policy onChange handler failed', { version: p.version, error: err });
    }
  };

  const files = watchFileSet([file, ...base.refs], {
    log,
    onChange: check,
    pollMs: opts.pollMs ?? 2000,
    debounceMs: opts.debounceMs ?? 100,
    watch: opts.watch !== false,
  });

  return {
    current: () => current,
    lastError: () => textError ?? compileError,
    close: () => {
      closed = true;
      files.close();
    },
  };
}

/** A referenced file as read now: its bytes, or the error code its read failed with. */
type Read = { readonly bytes: Uint8Array } | { readonly error: NodeJS.ErrnoException };

function readAll(files: readonly string[]): Map<string, Read> {
  const out = new Map<string, Read>();
  for (const f of files) {
    try {
      out.set(f, { bytes: readFileSync(f) });
    } catch (err) {
      out.set(f, { error: err as NodeJS.ErrnoException });
    }
  }
  return out;
}

/** compile.ts `readFile` over what `readAll` read (and fails as that read failed). */
function readerOf(reads: ReadonlyMap<string, Read>): (f: string) => Uint8Array {
  return (f) => {
    const r = reads.get(f);
    if (r === undefined) return readFileSync(f);
    if ('error' in r) throw r.error;
    return r.bytes;
  };
}

/**
 * What decides "changed": the text and the content of each referenced file. The content enters
 * as compile.ts `referenceDigest`, keyed per process, so this key says nothing about a secret.
 */
function stateKey(base: { readonly text: string }, reads: ReadonlyMap<string, Read>): string {
  const parts = [sha256(base.text)];
  for (const [f, r] of reads) parts.push(`${f}\u0000${'error' in r ? `error:${r.error.code ?? r.error.message}` : referenceDigest(r.bytes)}`);
  return parts.join('\u0000');
}

/** For the log: the referenced files (paths only). */
function referencing(base: { readonly refs: readonly string[] }): { referencedFiles?: readonly string[] } {
  return base.refs.length === 0 ? {} : { referencedFiles: base.refs };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
