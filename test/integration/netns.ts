import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * Linux network namespaces for the real traffic-capture tests (root required; CI runs as root):
 * commands run with their outcome, and a client and a pod namespace joined by a veth pair.
 */

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd`; never rejects: a failure is its exit code (1 when it had none) and its output. */
export function run(cmd: string, args: readonly string[], timeout = 15_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, [...args], { timeout, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** `run`, throwing with the command and its stderr unless it exits 0. */
export async function must(cmd: string, args: readonly string[]): Promise<Run> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r;
}

/** `ip` arguments that run `args` inside namespace `ns`. */
export const inNs = (ns: string, args: readonly string[]): string[] => ['netns', 'exec', ns, ...args];

/** Polls `fn` every 100 ms until it holds; throws naming `what` after `ms`. */
export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface NetnsPair {
  readonly client: string;
  readonly pod: string;
  readonly vethClient: string;
  readonly vethPod: string;
  /** Addresses that exist only inside the two namespaces (a random 10.x.y.0/24). */
  readonly clientIp: string;
  readonly podIp: string;
  /** Creates both namespaces, the veth pair between them, their addresses, and brings every link up. */
  up(): Promise<void>;
  /** Deletes both namespaces, which takes their veth ends, addresses and iptables rules with them. */
  down(): Promise<void>;
}

/** Names for a pair, from `tag` (two or three letters) and a random id, so that runs never collide. */
export function netnsPair(tag: string): NetnsPair {
  const id = randomBytes(3).toString('hex');
  const net = `10.${200 + ((randomBytes(1)[0] as number) % 50)}.${(randomBytes(1)[0] as number) % 250}`;
  const p = {
    client: `${tag}c-${id}`,
    pod: `${tag}p-${id}`,
    vethClient: `${tag}c${id}`,
    vethPod: `${tag}p${id}`,
    clientIp: `${net}.1`,
    podIp: `${net}.2`,
  };
  return {
    ...p,
    async up() {
      await must('ip', ['netns', 'add', p.client]);
      await must('ip', ['netns', 'add', p.pod]);
      await must('ip', ['link', 'add', p.vethClient, 'type', 'veth', 'peer', 'name', p.vethPod]);
      await must('ip', ['link', 'set', p.vethClient, 'netns', p.client]);
      await must('ip', ['link', 'set', p.vethPod, 'netns', p.pod]);
      await must('ip', inNs(p.client, ['ip', 'addr', 'add', `${p.clientIp}/24`, 'dev', p.vethClient]));
      await must('ip', inNs(p.pod, ['ip', 'addr', 'add', `${p.podIp}/24`, 'dev', p.vethPod]));
      for (const [ns, dev] of [[p.client, p.vethClient], [p.pod, p.vethPod]] as const) {
        await must('ip', inNs(ns, ['ip', 'link', 'set', 'lo', 'up']));
        await must('ip', inNs(ns, ['ip', 'link', 'set', dev, 'up']));
      }
    },
    async down() {
      await run('ip', ['netns', 'del', p.client]);
      await run('ip', ['netns', 'del', p.pod]);
    },
  };
}
