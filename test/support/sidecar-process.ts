import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

export interface SpawnedSidecar {
  readonly proc: ChildProcess;
  /** The ports of its "sidecar started" log line. */
  readonly inbound: number;
  readonly admin: number;
  /** SIGTERM, and its exit. */
  stop(): Promise<void>;
}

/**
 * Starts `ward sidecar --config <configFile>` as a process, with `env` on top of this one's, and
 * resolves once it has logged "sidecar started"; fails with its stderr if it exits or takes
 * more than 15 s.
 */
export async function spawnSidecar(configFile: string, env: NodeJS.ProcessEnv): Promise<SpawnedSidecar> {
  const proc = spawn(process.execPath, [WARD, 'sidecar', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 15_000;
  let started: RegExpExecArray | null;
  while ((started = /"msg":"sidecar started".*?"inbound":(\d+).*?"admin":(\d+)/.exec(stderr)) === null) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the sidecar did not start:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, inbound: Number(started[1]), admin: Number(started[2]), stop };
}

/**
 * Starts `ward sidecar --config sidecar.yaml` in a new directory holding `files` (name -> text),
 * reads its admin `/memory` document once it has started (and `settleMs` later), and stops it.
 */
export async function sidecarMemory(files: Readonly<Record<string, string>>, env: NodeJS.ProcessEnv, settleMs = 0): Promise<unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'ward-memory-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const ward = await spawnSidecar(join(dir, 'sidecar.yaml'), env);
  try {
    if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
    return await (await fetch(`http://127.0.0.1:${ward.admin}/memory`)).json();
  } finally {
    await ward.stop();
  }
}
