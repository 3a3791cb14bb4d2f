import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import type { Logger } from '../lib/log.ts';

/** One `ward` subcommand. `run` returns the exit code; only `main.ts` turns it into an exit. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  /** Full help text printed by `ward <name> --help`. */
  readonly help: string;
  /** Set when the command has subcommands that print their own `--help` (e.g. `ward policy check --help`). */
  readonly ownHelp?: boolean;
  run(argv: readonly string[]): Promise<number>;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** parseArgs with `--help` always accepted and unknown flags reported as a UsageError. */
export function parseFlags<T extends ParseArgsOptionsConfig>(
  argv: readonly string[],
  options: T,
  allowPositionals = false,
): ReturnType<typeof parseArgs<{ options: T & { help: { type: 'boolean'; short: 'h' } }; allowPositionals: boolean; strict: true; args: string[] }>> {
  try {
    return parseArgs({
      args: [...argv],
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * Resolves on the first SIGTERM or SIGINT (logged), for long-running commands to shut down.
 * Call it before starting up: from then on a signal is handled, so one that arrives while the
 * command starts, or just after it says it started, drains instead of killing the process.
 */
export function untilShutdownSignal(log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      log.info('signal received', { signal: sig });
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
