import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { isOn, onOff } from './on-off.ts';

/**
 * File pages trimmed from the resident set. Most of what the `node` binary paged in to start
 * (V8's and Node's initialization, the module loader, OpenSSL's set-up) is never used again,
 * and the pages a warm-up or an occasional path touched stay too, because nothing unmaps them:
 * in a sidecar at saturation ~47 MB of the binary were resident, of which the calls use ~19 MB
 * (docs/performance.md, "Memory"). These pages are read-only views of files: dropping them
 * from this process (madvise MADV_DONTNEED, the one function of the addon in native/) only
 * means that a page used again is mapped again from the page cache, or read from the file, at
 * its next touch. Nothing is lost. The kernel keeps the pages cached, shared with every process
 * of the image, and may reclaim them once no process maps them.
 *
 * Only mappings where that holds are touched: private, not writable, backed by a regular file,
 * with no page of their own (a relocated page of a library, or a copy-on-write page swapped out,
 * would revert to the file's bytes), none locked. Which ones those are is read from
 * /proc/self/smaps (a few ms: the kernel walks every mapping's pages) when ward starts and once
 * it has started; a trim every `TRIM_INTERVAL_MS` drops the same ranges again after checking in
 * /proc/self/maps (no page walk) that each is still the same mapping, ~2 ms in all.
 *
 * `WARD_TRIM_FILE_PAGES=off` turns it off. Without the addon (no C compiler when `npm ci` ran;
 * bin/build-native.js) ward runs as before and `/memory` says why.
 */

/** A range of this process's address space whose pages can be dropped safely. */
export interface Releasable {
  readonly start: number;
  readonly end: number;
  /** Its resident kB when /proc/self/smaps was read. */
  readonly rssKb: number;
  readonly path: string;
  /** The mapping as /proc/self/maps names it (range, permissions, offset, device, inode, path). */
  readonly key: string;
}

/** What `/memory` reports (the admin port). */
export interface FilePagesReport {
  /** `trimming` once a release ran, `off` (WARD_TRIM_FILE_PAGES=off), `unavailable` (no addon, or not Linux), `pending` before the first. */
  readonly state: 'pending' | 'trimming' | 'off' | 'unavailable';
  /** Why it is unavailable, or what the last release could not do. */
  readonly detail: string | null;
  /** Releases that read /proc/self/smaps (at start and once started), and what they dropped. */
  readonly releases: number;
  readonly releasedBytes: number;
  /** Periodic trims of the same ranges. */
  readonly trims: number;
  /** Ranges madvise refused (their errno in `detail`); they stay resident. */
  readonly refused: number;
}

interface Addon {
  dontneed(start: number, end: number): number;
}

/** How often the ranges are trimmed again once the process has started. */
export const TRIM_INTERVAL_MS = 10_000;

/** `start-end perms offset dev inode path`; the path is absent for an anonymous mapping. */
const MAPPING = /^([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) *(.*)$/;
const FIELD = /^([A-Za-z_]+):\s+(\d+) kB$/;

/** The identity of a mapping line: everything but the padding before its path. */
function keyOf(m: RegExpExecArray): string {
  return `${m[1]}-${m[2]} ${m[3]} ${m[4]} ${m[5]} ${m[6]} ${m[7]}`;
}

/** The file-backed, private, read-only mappings of `smaps` with no page of their own. */
export function releasableRanges(smaps: string): Releasable[] {
  const out: Releasable[] = [];
  const lines = smaps.split('\n');
  let i = 0;
  while (i < lines.length) {
    const head = MAPPING.exec(lines[i]!);
    i++;
    if (head === null) continue;
    // The mapping's fields, up to the next mapping line.
    let rss = -1;
    let own = 0;
    let locked = 0;
    // Without the Anonymous field (a kernel that does not count copy-on-write pages per
    // mapping) nothing says a mapping has no page of its own: it is kept.
    let counted = false;
    while (i < lines.length && !MAPPING.test(lines[i]!)) {
      const f = FIELD.exec(lines[i]!);
      i++;
      if (f === null) continue;
      const kb = Number(f[2]);
      switch (f[1]) {
        case 'Rss':
          rss = kb;
          break;
        case 'Anonymous':
          counted = true;
          own += kb;
          break;
        case 'Swap':
        case 'Private_Dirty':
        case 'Shared_Dirty':
          own += kb;
          break;
        case 'Locked':
          locked += kb;
          break;
        default:
      }
    }
    const perms = head[3]!;
    const path = head[7]!;
    if (perms[1] !== '-' || perms[3] !== 'p') continue; // writable, or shared
    if (!regularFilePath(path)) continue;
    if (rss <= 0 || !counted || own !== 0 || locked !== 0) continue; // nothing resident, or (maybe) pages of its own
    const start = Number.parseInt(head[1]!, 16);
    const end = Number.parseInt(head[2]!, 16);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end <= start) continue;
    out.push({ start, end, rssKb: rss, path, key: keyOf(head) });
  }
  return out;
}

/** The identities of every mapping in `/proc/self/maps` text. */
export function mappingKeys(maps: string): Set<string> {
  const keys = new Set<string>();
  for (const line of maps.split('\n')) {
    const m = MAPPING.exec(line);
    if (m !== null) keys.add(keyOf(m));
  }
  return keys;
}

/** A path the kernel shows for a mapping of a regular file: not `[heap]`, a device, a memfd or a file deleted since. */
function regularFilePath(path: string): boolean {
  if (!path.startsWith('/')) return false;
  if (path.endsWith(' (deleted)')) return false;
  return !(path.startsWith('/dev/') || path.startsWith('/memfd:') || path.startsWith('/proc/') || path.startsWith('/sys/'));
}

/** Reads WARD_TRIM_FILE_PAGES: true (on, the default) or false (off); throws for anything else. */
export function trimEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return onOff(env, 'WARD_TRIM_FILE_PAGES');
}

export interface PageReleaser {
  /**
   * Finds the releasable ranges (/proc/self/smaps) and drops them now. Returns the resident kB
   * dropped (0 when off or unavailable). Never throws: a release that cannot run leaves the
   * process as it was.
   */
  release(env?: NodeJS.ProcessEnv): number;
  /** Drops the ranges the last release found again, those still mapped as they were. */
  trim(env?: NodeJS.ProcessEnv): void;
  report(): FilePagesReport;
}

/** A releaser using the addon at `addonPath` (loaded at its first release). */
export function createPageReleaser(addonPath: string, files: { read(path: string): string } = { read: (p) => readFileSync(p, 'latin1') }): PageReleaser {
  let addon: Addon | null | undefined;
  let unavailable: string | null = null;
  let state: FilePagesReport['state'] = 'pending';
  let detail: string | null = null;
  let releases = 0;
  let releasedKb = 0;
  let trims = 0;
  let refused = 0;
  let ranges: readonly Releasable[] = [];

  const load = (): Addon | null => {
    if (addon !== undefined) return addon;
    addon = null;
    if (process.platform !== 'linux') {
      unavailable = `not on Linux (${process.platform})`;
      return null;
    }
    try {
      const m = createRequire(import.meta.url)(addonPath) as Partial<Addon>;
      if (typeof m.dontneed !== 'function') throw new Error('it has no dontneed function');
      addon = m as Addon;
    } catch (err) {
      const why = err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
      unavailable = `${addonPath} not loaded (${why}); node bin/build-native.js builds it`;
    }
    return addon;
  };

  /** The addon when enabled and loaded; else records why not and returns null. */
  const ready = (env: NodeJS.ProcessEnv): Addon | null => {
    if (!isOn(env, 'WARD_TRIM_FILE_PAGES')) {
      state = 'off';
      return null;
    }
    const a = load();
    if (a === null) {
      state = 'unavailable';
      detail = unavailable;
    }
    return a;
  };

  /** Drops `rs`; returns the kB they held when found. */
  const drop = (a: Addon, rs: readonly Releasable[]): number => {
    let kb = 0;
    for (const r of rs) {
      const errno = a.dontneed(r.start, r.end);
      if (errno === 0) kb += r.rssKb;
      else {
        refused++;
        detail = `madvise refused ${r.path} (errno ${errno})`;
      }
    }
    return kb;
  };

  return {
    release(env = process.env) {
      const a = ready(env);
      if (a === null) return 0;
      try {
        ranges = releasableRanges(files.read('/proc/self/smaps'));
      } catch (err) {
        detail = `cannot read /proc/self/smaps: ${err instanceof Error ? err.message : String(err)}`;
        return 0;
      }
      const kb = drop(a, ranges);
      state = 'trimming';
      releases++;
      releasedKb += kb;
      return kb;
    },
    trim(env = process.env) {
      const a = ready(env);
      if (a === null || ranges.length === 0) return;
      let keys: Set<string>;
      try {
        keys = mappingKeys(files.read('/proc/self/maps'));
      } catch (err) {
        detail = `cannot read /proc/self/maps: ${err instanceof Error ? err.message : String(err)}`;
        return;
      }
      // A range unmapped since, or mapped again as something else, is never touched.
      ranges = ranges.filter((r) => keys.has(r.key));
      drop(a, ranges);
      trims++;
    },
    report: () => ({ state, detail, releases, releasedBytes: releasedKb * 1024, trims, refused }),
  };
}

/** This process's releaser: the addon bin/build-native.js builds. */
const releaser = createPageReleaser(fileURLToPath(new URL('../../native/build/file-pages.node', import.meta.url)));

/** Finds and drops this process's releasable file pages now (see PageReleaser.release). */
export function releaseFilePages(env: NodeJS.ProcessEnv = process.env): number {
  return releaser.release(env);
}

export function filePagesReport(): FilePagesReport {
  return releaser.report();
}

let trimming: NodeJS.Timeout | undefined;

/**
 * For a process that has started: finds and drops the releasable pages now, then trims them
 * every TRIM_INTERVAL_MS. What a process touches while it starts (its modules compiled, its
 * listeners opened, its first keys fetched, its first calls compiled by the optimizing
 * compiler) is not done at any one moment, and the pages an occasional path touches stay
 * until something drops them. The timer does not keep the process.
 */
export function trimFilePages(env: NodeJS.ProcessEnv = process.env): void {
  releaser.release(env);
  if (releaser.report().state !== 'trimming') return; // off, or no addon
  trimming ??= setInterval(() => releaser.trim(env), TRIM_INTERVAL_MS).unref();
}
