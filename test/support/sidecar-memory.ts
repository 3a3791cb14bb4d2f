import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const WARD = fileURLToPath(new URL('../../bin/ward.js', import.meta.url));

/**
 * Starts `ward sidecar --config sidecar.yaml` in a new directory holding `files` (name -> text),
 * reads its admin `/memory` document once it has started (and `settleMs` later), and stops it.
 */
export async function sidecarMemory(files: Readonly<Record<string, string>>, env: NodeJS.ProcessEnv, settleMs = 0): Promise<unknown> {
  const dir = mkdtempSync(join(tmpdir(), 'ward-memory-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const child = spawn(process.execPath, [WARD, 'sidecar', '--config', join(dir, 'sidecar.yaml')], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    const deadline = Date.now() + 15_000;
    let admin: RegExpExecArray | null = null;
    while ((admin = /"msg":"sidecar started".*?"admin":(\d+)/.exec(stderr)) === null) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the sidecar did not start:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
    return await (await fetch(`http://127.0.0.1:${admin[1]}/memory`)).json();
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}
