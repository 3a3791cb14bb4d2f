import { type FSWatcher, statSync, watch } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from './log.ts';

/**
 * Says when any file of a set may have changed, by calling `onChange` after a quiet time (so a
 * file written in several steps is read once). Two sources, as for a Kubernetes volume either
 * alone can miss a change:
 * - fs.watch on each file's directory: it sees an atomic rename-replace and the kubelet's
 *   `..data` symlink swap (ConfigMap and Secret volumes), which never touch the file's own name;
 * - a stat poll of each file (following symlinks: identity, size, modification time), for
 *   filesystems where fs.watch is silent.
 * What changed, if anything, is for the caller to find out: it reads the files again.
 */
export interface FileSetWatch {
  /** Watch these files from now on; directories no longer needed are unwatched. */
  set(files: readonly string[]): void;
  close(): void;
}

export interface FileSetWatchOptions {
  readonly log: Logger;
  readonly onChange: () => void;
  /** Stat-poll period. */
  readonly pollMs: number;
  /** Quiet time before `onChange`. */
  readonly debounceMs: number;
  /** Use fs.watch; false leaves only the stat poll (filesystems where watch misbehaves). */
  readonly watch: boolean;
}

export function watchFileSet(files: readonly string[], opts: FileSetWatchOptions): FileSetWatch {
  const { log } = opts;
  let closed = false;
  let debounce: NodeJS.Timeout | undefined;
  /** File -> its stat key when last seen. */
  let seen = new Map<string, string>();
  const watchers = new Map<string, FSWatcher | null>();

  const schedule = (): void => {
    if (closed) return;
    if (debounce !== undefined) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      if (!closed) opts.onChange();
    }, opts.debounceMs);
    debounce.unref();
  };

  const watchDir = (dir: string): void => {
    if (!opts.watch || watchers.has(dir)) return;
    // null: tried and failed; the poll covers this directory (not retried, so not logged again)
    watchers.set(dir, null);
    try {
      const w = watch(dir, { persistent: false }, () => schedule());
      w.on('error', (err) => {
        log.warn('directory watch failed; relying on polling', { dir, error: err });
        w.close();
        if (watchers.get(dir) === w) watchers.set(dir, null);
      });
      watchers.set(dir, w);
    } catch (err) {
      log.warn('cannot watch a directory; relying on polling', { dir, error: err });
    }
  };

  const set = (next: readonly string[]): void => {
    if (closed) return;
    const kept = new Map<string, string>();
    for (const f of next) kept.set(f, seen.get(f) ?? statKey(f));
    seen = kept;
    const dirs = new Set([...kept.keys()].map((f) => dirname(f)));
    for (const [dir, w] of watchers) {
      if (dirs.has(dir)) continue;
      w?.close();
      watchers.delete(dir);
    }
    for (const dir of dirs) watchDir(dir);
  };
  set(files);

  const poll = setInterval(() => {
    let changed = false;
    for (const [f, key] of seen) {
      const now = statKey(f);
      if (now === key) continue;
      seen.set(f, now);
      changed = true;
    }
    if (changed) schedule();
  }, opts.pollMs);
  poll.unref();

  return {
    set,
    close: () => {
      closed = true;
      clearInterval(poll);
      if (debounce !== undefined) clearTimeout(debounce);
      for (const w of watchers.values()) w?.close();
      watchers.clear();
    },
  };
}

/** What a change of the file would change: identity (rename-replace, symlink swap), size, modification time. */
function statKey(file: string): string {
  try {
    const s = statSync(file);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'missing';
  }
}
