/**
 * Structured JSON logs, one object per line on stderr. Fields are passed explicitly; callers
 * never pass a token or an Authorization header (log issuer, kid, or `tokenHash()` instead).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  enabled(level: LogLevel): boolean;
}

export interface LogSink {
  write(line: string): void;
}

export function createLogger(
  opts: { level?: LogLevel; sink?: LogSink; base?: Record<string, unknown> } = {},
): Logger {
  const min = RANK[opts.level ?? 'info'];
  const sink = opts.sink ?? { write: (line: string) => process.stderr.write(line) };
  const base = opts.base ?? {};
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (RANK[level] < min) return;
    const rec = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    sink.write(`${JSON.stringify(rec, errorReplacer)}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
    enabled: (level) => RANK[level] >= min,
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) };
  }
  return value;
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = createLogger({ level: 'error', sink: { write: () => {} } });

/**
 * A budget of log lines per second, for lines an attacker can cause (one per refused call):
 * `take()` is the number of lines left out since the last one it allowed (0 for none), or -1
 * when this one is left out too.
 */
export function perSecond(max: number, now: () => number = Date.now): { take(): number } {
  let windowStart = -Infinity;
  let used = 0;
  let skipped = 0;
  return {
    take(): number {
      const t = now();
      if (t - windowStart >= 1000) {
        windowStart = t;
        used = 0;
      }
      if (used >= max) {
        skipped++;
        return -1;
      }
      used++;
      const n = skipped;
      skipped = 0;
      return n;
    },
  };
}
