import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The sidecar's last accepted policy version, kept in its state directory so that a sidecar
 * restarted while the control plane is down still enforces it. Written atomically (temp file,
 * fsync, rename): a crash mid-write leaves the previous file, never a torn one.
 */
export interface PersistedPolicy {
  readonly service: string;
  /** version_info as the control plane sent it (what the sidecar announces on connect). */
  readonly versionInfo: string;
  readonly fileName: string;
  readonly text: string;
  /** When it was accepted (ms since the epoch), for operators reading the file. */
  readonly acceptedAt: number;
  /**
   * The version this sidecar computed from `text` when it accepted it (policy/compile.ts
   * `policyVersion`). On restore, `text` must still give it, or `versionInfo` is not announced:
   * it would name content the sidecar does not hold. Absent in files written before it existed.
   */
  readonly localVersion?: string;
}

export function statePath(stateDir: string, service: string): string {
  return join(stateDir, `policy-${service}.json`);
}

/** The persisted policy, or null when there is none; throws on a file that exists but is unreadable or malformed. */
export function readPersistedPolicy(stateDir: string, service: string): PersistedPolicy | null {
  let raw: string;
  try {
    raw = readFileSync(statePath(stateDir, service), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const v = JSON.parse(raw) as Record<string, unknown>;
  if (
    typeof v.service !== 'string' ||
    typeof v.versionInfo !== 'string' ||
    typeof v.fileName !== 'string' ||
    typeof v.text !== 'string' ||
    typeof v.acceptedAt !== 'number' ||
    (v.localVersion !== undefined && typeof v.localVersion !== 'string')
  ) {
    throw new Error('malformed policy state file');
  }
  const p = { service: v.service, versionInfo: v.versionInfo, fileName: v.fileName, text: v.text, acceptedAt: v.acceptedAt };
  return v.localVersion === undefined ? p : { ...p, localVersion: v.localVersion };
}

/** Checks at start-up that the state directory exists (creating it) so a bad path fails early. */
export function ensureStateDir(stateDir: string): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
}

export async function writePersistedPolicy(stateDir: string, p: PersistedPolicy): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const target = statePath(stateDir, p.service);
  const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(p, null, 2));
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
