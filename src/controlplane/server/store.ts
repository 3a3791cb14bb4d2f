import { type FSWatcher, watch as fsWatch } from 'node:fs';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, type FileIssue, formatIssue } from '../../errors/ward-error.ts';
import { type Clock, systemClock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/log.ts';
import { createYamlLocator, type YamlLocator } from '../../lib/yaml-locate.ts';

/**
 * The control plane's view of the policy directory: per service, the latest valid version.
 *
 * - Every file is validated with the same parser as `ward policy check` (injected as `parse`).
 * - An invalid file keeps its service at the file's previous valid version; the error (file,
 *   line, reason) is kept for `ward status` and logged once per distinct content.
 * - A service named by two files is served from the file that already served it (on a fresh
 *   start: the first by file name); the other file gets an error.
 * - A deleted file takes its service away. Sidecars are not told (the protocol has no delete):
 *   they keep enforcing their last good version.
 * - Kubernetes ConfigMap volumes: `orders.yaml -> ..data/orders.yaml`, `..data -> ..2026_...`,
 *   with `..data` swapped atomically on update. Dot-entries are never read as policy files;
 *   the visible names are symlinks that `readFile` follows, and the swap of `..data` is an event
 *   on the directory itself, so watching the directory (plus a poll, for mounts that lose
 *   events) sees every update. Every scan re-reads the whole directory, so no event is trusted
 *   to say *what* changed, and keeps a read only if `..data` named the same generation before
 *   and after it, so a scan never mixes two generations.
 */

export interface ServedPolicy {
  readonly service: string;
  readonly version: string;
  /** File name relative to the policy directory. */
  readonly file: string;
  /** The file's text: what sidecars receive and compile themselves. */
  readonly text: string;
  readonly policy: ValidatedPolicy;
  /** When this version became the served one (ms since the epoch). */
  readonly updatedAt: number;
}

export interface FileProblem {
  readonly file: string;
  /**
   * Service of the file's last served content; for a file that never served one, the service
   * its valid content names (refused because another file serves it); else null.
   */
  readonly service: string | null;
  readonly issues: readonly FileIssue[];
  readonly since: number;
}

export interface PolicyStore {
  get(service: string): ServedPolicy | undefined;
  /** Served policies, sorted by service. */
  services(): readonly ServedPolicy[];
  /** Files whose current content is not served, sorted by file name. */
  problems(): readonly FileProblem[];
  /** Called after each scan that changed, added or removed services, with their names. */
  subscribe(listener: (changed: readonly string[]) => void): () => void;
  /** Re-reads the directory now; resolves once a scan that started after the call has finished. */
  rescan(): Promise<void>;
  close(): void;
}

/** What the store needs from a validated policy (a CompiledPolicy has both). */
export interface ValidatedPolicy {
  readonly service: string;
  /** Content hash of the canonical policy: equal on every replica for equal content. */
  readonly version: string;
}

/**
 * The validator: ward's policy schema and semantic checks (policy/load.ts). Throws ConfigError
 * with file:line:column issues; `file` is the name relative to the policy directory.
 */
export type PolicyParser = (text: string, file: string) => ValidatedPolicy;

export interface PolicyStoreOptions {
  readonly dir: string;
  readonly parse: PolicyParser;
  readonly log: Logger;
  readonly clock?: Clock;
  readonly debounceMs?: number;
  readonly pollIntervalMs?: number;
  readonly maxFileBytes?: number;
  /** false: no fs.watch and no poll, only explicit rescan() (tests). */
  readonly watch?: boolean;
  /** The control-plane config file's: a directory that cannot be read is then reported at its `policyDir`. */
  readonly locator?: YamlLocator | undefined;
}

const POLICY_FILE = /\.ya?ml$/;
/** A burst of events delays the scan by at most this many debounce periods after its first event. */
export const DEBOUNCE_MAX_WAIT = 10;
/** Reads of the directory per scan when a ConfigMap `..data` swap keeps crossing them. */
const GENERATION_ATTEMPTS = 3;

type Parsed = { readonly ok: true; readonly policy: ValidatedPolicy } | { readonly ok: false; readonly issues: readonly FileIssue[] };

interface FileState {
  text: string;
  parsed: Parsed;
  /** The content of this file that was last served; what an invalid edit falls back to. */
  lastGood: { readonly policy: ValidatedPolicy; readonly text: string } | null;
  problem: FileProblem | null;
  /** The last problem text we logged, so a poll does not log the same error every second. */
  logged: string;
}

/** Creates the store and performs the first scan. A missing or unreadable directory is a ConfigError. */
export async function createPolicyStore(opts: PolicyStoreOptions): Promise<PolicyStore> {
  const { dir, parse, log } = opts;
  const clock = opts.clock ?? systemClock;
  const maxFileBytes = opts.maxFileBytes ?? 1024 * 1024;
  const debounceMs = opts.debounceMs ?? 100;
  const pollIntervalMs = opts.pollIntervalMs ?? 1000;

  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    // In the config file at `policyDir` (naming the directory) when its positions are at hand.
    if (opts.locator !== undefined) throw new ConfigError([opts.locator.issue(['policyDir'], `cannot read policy directory ${dir}: ${why}`)]);
    throw new ConfigError([{ file: dir, line: 1, column: 1, path: 'policyDir', message: `cannot read policy directory: ${why}` }]);
  }

  const files = new Map<string, FileState>();
  let served = new Map<string, ServedPolicy>();
  let servedList: readonly ServedPolicy[] = [];
  let problemList: readonly FileProblem[] = [];
  const listeners = new Set<(changed: readonly string[]) => void>();
  let closed = false;
  // Where a file's `service:` is, for the conflict reported there: found once per content (a
  // parsed policy is new for each new text), not at every poll while the conflict lasts.
  const servicePositions = new WeakMap<ValidatedPolicy, { line: number; column: number }>();
  const serviceIssue = (c: { file: string; policy: ValidatedPolicy; text: string }, message: string): FileIssue => {
    let pos = servicePositions.get(c.policy);
    if (pos === undefined) {
      pos = createYamlLocator(c.text, c.file).position(['service']);
      servicePositions.set(c.policy, pos);
    }
    return { file: c.file, ...pos, path: 'service', message };
  };

  async function readPolicyFile(name: string): Promise<{ kind: 'text'; text: string } | { kind: 'gone' } | { kind: 'error'; issue: FileIssue }> {
    const path = join(dir, name);
    try {
      const st = await stat(path); // follows the ConfigMap symlinks
      if (!st.isFile()) return { kind: 'gone' };
      if (st.size > maxFileBytes) return { kind: 'error', issue: wholeFile(name, `file is ${st.size} bytes, more than the ${maxFileBytes} allowed`) };
      return { kind: 'text', text: await readFile(path, 'utf8') };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A dangling symlink during a ConfigMap swap, or a file deleted between readdir and read.
      if (code === 'ENOENT') return { kind: 'gone' };
      return { kind: 'error', issue: wholeFile(name, `cannot read: ${code ?? (err as Error).message}`) };
    }
  }

  function parseText(text: string, name: string): Parsed {
    try {
      return { ok: true, policy: parse(text, name) };
    } catch (err) {
      if (err instanceof ConfigError) return { ok: false, issues: err.issues };
      return { ok: false, issues: [wholeFile(name, (err as Error).message ?? String(err))] };
    }
  }

  /** Where `..data` points (a ConfigMap volume's current generation), or null when it is no symlink. */
  async function dataGeneration(): Promise<string | null> {
    try {
      return await readlink(join(dir, '..data'));
    } catch {
      return null; // no ConfigMap volume (ENOENT, EINVAL), or unreadable: nothing to compare
    }
  }

  async function scanOnce(): Promise<void> {
    // A ConfigMap volume swaps `..data` atomically, but each visible name resolves `..data` anew
    // when it is read, so a swap between two reads would serve a mix of two generations (found in
    // review). So every file is read first, and kept only if `..data` named the same generation
    // before and after; otherwise they are read again. Validation and assignment come after.
    for (let attempt = 1; ; attempt++) {
      const before = await dataGeneration();
      const read = await readAll();
      if (read === null) return;
      const after = await dataGeneration();
      if (before === after) return apply(read);
      if (attempt >= GENERATION_ATTEMPTS) {
        // Keep serving what we have; the swaps are directory events, and the poll comes anyway.
        log.warn('policy directory changed generation during every read; keeping the current policies until the next scan', { dir, attempts: attempt });
        return;
      }
      log.debug('ConfigMap ..data swapped during a scan; reading the directory again', { dir, before, after });
    }
  }

  type ReadResult = Awaited<ReturnType<typeof readPolicyFile>>;

  /** Every policy file's content (or why it cannot be read); null when the directory cannot be listed. */
  async function readAll(): Promise<Map<string, ReadResult> | null> {
    let names: string[];
    try {
      names = (await readdir(dir, { withFileTypes: true }))
        .filter((e) => !e.name.startsWith('.') && POLICY_FILE.test(e.name) && (e.isFile() || e.isSymbolicLink()))
        .map((e) => e.name)
        .sort();
    } catch (err) {
      // Keep serving what we have: a directory that vanished for a moment must not unpublish
      // every service.
      log.error('cannot read policy directory', { dir, err });
      return null;
    }
    const read = new Map<string, ReadResult>();
    for (const name of names) read.set(name, await readPolicyFile(name));
    return read;
  }

  /** Takes one consistent read of the directory: validates what changed, then reassigns services. */
  function apply(read: ReadonlyMap<string, ReadResult>): void {
    const present = new Set<string>();
    for (const [name, r] of read) {
      if (r.kind === 'gone') continue;
      present.add(name);
      const text = r.kind === 'text' ? r.text : `\0unreadable\0${r.issue.message}`;
      const prev = files.get(name);
      if (prev !== undefined && prev.text === text) continue;
      const parsed: Parsed = r.kind === 'text' ? parseText(text, name) : { ok: false, issues: [r.issue] };
      if (prev === undefined) files.set(name, { text, parsed, lastGood: null, problem: null, logged: '' });
      else {
        prev.text = text;
        prev.parsed = parsed;
      }
    }
    for (const name of [...files.keys()]) if (!present.has(name)) files.delete(name);

    assign();
  }

  /** Decides which file serves which service, from scratch, given every file's current state. */
  function assign(): void {
    const now = clock();
    const previousOwner = new Map<string, string>();
    for (const s of served.values()) previousOwner.set(s.service, s.file);

    // Each file's candidate: its new content when valid, else the content it last served.
    type Candidate = { file: string; policy: ValidatedPolicy; text: string; fresh: boolean };
    const claims = new Map<string, Candidate[]>();
    const candidateOf = (name: string, st: FileState): Candidate | null => {
      if (st.parsed.ok) return { file: name, policy: st.parsed.policy, text: st.text, fresh: true };
      if (st.lastGood !== null) return { file: name, policy: st.lastGood.policy, text: st.lastGood.text, fresh: false };
      return null;
    };
    for (const [name, st] of [...files.entries()].sort(byKey)) {
      const c = candidateOf(name, st);
      if (c === null) continue;
      const list = claims.get(c.policy.service) ?? [];
      list.push(c);
      claims.set(c.policy.service, list);
    }

    const winners = new Map<string, Candidate>();
    const conflicts = new Map<string, FileIssue>();
    const fallbacks: Candidate[] = [];
    for (const [service, list] of claims) {
      const owner = previousOwner.get(service);
      const winner = list.find((c) => c.file === owner) ?? list[0];
      if (winner === undefined) continue;
      winners.set(service, winner);
      for (const loser of list) {
        if (loser === winner) continue;
        conflicts.set(loser.file, serviceIssue(loser, `service '${service}' is already served from ${winner.file}`));
        // A loser whose new content conflicts keeps serving what it served before, if that
        // was another service nobody else claims (one level only: no cascades).
        const lg = files.get(loser.file)?.lastGood;
        if (loser.fresh && lg != null && lg.policy.service !== service) fallbacks.push({ file: loser.file, policy: lg.policy, text: lg.text, fresh: false });
      }
    }
    for (const f of fallbacks) if (!winners.has(f.policy.service)) winners.set(f.policy.service, f);

    const next = new Map<string, ServedPolicy>();
    const changed: string[] = [];
    for (const [service, w] of winners) {
      const st = files.get(w.file);
      if (st !== undefined && w.fresh) st.lastGood = { policy: w.policy, text: w.text };
      const old = served.get(service);
      if (old !== undefined && old.version === w.policy.version) {
        next.set(service, old.file === w.file && old.text === w.text ? old : { ...old, file: w.file, text: w.text, policy: w.policy });
        continue;
      }
      next.set(service, { service, version: w.policy.version, file: w.file, text: w.text, policy: w.policy, updatedAt: now });
      changed.push(service);
      log.info('policy version served', { service, version: w.policy.version, file: w.file, previousVersion: old?.version ?? null });
    }
    for (const [service, old] of served) {
      if (next.has(service)) continue;
      changed.push(service);
      log.warn('service no longer served: its policy file is gone; sidecars keep their last version', { service, version: old.version, file: old.file });
    }

    // Problems: invalid content, or a valid file that lost a service conflict.
    const problems: FileProblem[] = [];
    for (const [name, st] of [...files.entries()].sort(byKey)) {
      const conflict = conflicts.get(name);
      const issues = !st.parsed.ok ? st.parsed.issues : conflict !== undefined ? [conflict] : null;
      if (issues === null) {
        st.problem = null;
        st.logged = '';
        continue;
      }
      const text = issues.map(formatIssue).join('\n');
      // The service the file last served, else the one its valid content names (a file refused
      // because that service is taken): `ward status --service X` must list the file that
      // conflicts with X (found in review: it was reported with no service).
      const service = st.lastGood?.policy.service ?? (st.parsed.ok ? st.parsed.policy.service : null);
      st.problem = { file: name, service, issues, since: st.problem?.since ?? now };
      problems.push(st.problem);
      if (st.logged !== text) {
        st.logged = text;
        log.warn('policy file refused; the previous valid version stays in force', {
          file: name,
          service: st.problem.service,
          servedVersion: st.problem.service === null ? null : (next.get(st.problem.service)?.version ?? null),
          errors: issues.map(formatIssue),
        });
      }
    }

    served = next;
    servedList = [...next.values()].sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
    problemList = problems;
    if (changed.length > 0) {
      for (const l of listeners) {
        try {
          l(changed);
        } catch (err) {
          log.error('policy store listener failed', { err });
        }
      }
    }
  }

  // ---- scheduling: one scan at a time; requests during a scan coalesce into one more ----
  let running: Promise<void> | null = null;
  let again = false;
  let waiters: (() => void)[] = [];

  function runScan(): Promise<void> {
    if (running !== null) {
      again = true;
      return new Promise((resolve) => waiters.push(resolve));
    }
    running = (async () => {
      do {
        again = false;
        const mine = waiters;
        waiters = [];
        try {
          await scanOnce();
        } catch (err) {
          log.error('policy directory scan failed', { dir, err });
        }
        for (const w of mine) w();
      } while (again && !closed);
      running = null;
      for (const w of waiters.splice(0)) w();
    })();
    return running;
  }

  // Debounce: the scan runs `debounceMs` after the *last* event, so a file still being written
  // (events keep coming) is read once it is quiet, not half-way (found in review: the timer ran
  // from the first event). A directory that never goes quiet (a file rewritten without pause) is
  // still read `DEBOUNCE_MAX_WAIT` debounces after the first event of the burst.
  let debounce: NodeJS.Timeout | null = null;
  let burstStart = 0;
  function schedule(): void {
    if (closed) return;
    const now = performance.now();
    if (debounce === null) burstStart = now;
    else clearTimeout(debounce);
    const wait = Math.max(0, Math.min(debounceMs, burstStart + DEBOUNCE_MAX_WAIT * debounceMs - now));
    debounce = setTimeout(() => {
      debounce = null;
      void runScan();
    }, wait);
  }

  let watcher: FSWatcher | null = null;
  function startWatch(): void {
    if (closed || watcher !== null) return;
    try {
      const w = fsWatch(dir, { persistent: false }, () => schedule());
      w.on('error', (err) => {
        log.warn('policy directory watch failed; polling only until it can be re-established', { dir, err });
        w.close();
        if (watcher === w) watcher = null;
      });
      watcher = w;
    } catch (err) {
      log.warn('cannot watch policy directory; polling only', { dir, err });
    }
  }

  await runScan();
  let poll: NodeJS.Timeout | null = null;
  if (opts.watch !== false) {
    startWatch();
    poll = setInterval(() => {
      startWatch();
      void runScan();
    }, pollIntervalMs);
    poll.unref();
  }

  return {
    get: (service) => served.get(service),
    services: () => servedList,
    problems: () => problemList,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    rescan: () => runScan(),
    close() {
      closed = true;
      if (debounce !== null) clearTimeout(debounce);
      if (poll !== null) clearInterval(poll);
      watcher?.close();
      watcher = null;
      listeners.clear();
    },
  };
}

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

function wholeFile(file: string, message: string): FileIssue {
  return { file, line: 1, column: 1, path: '', message };
}
