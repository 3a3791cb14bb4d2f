// V8 flags ward sets for itself, before it loads any of its modules. NODE_OPTIONS carries only a
// few of V8's flags (the heap sizes), so an injected sidecar could not be given these that way.
//
//   --no-maglev  V8's mid-tier optimizing compiler (Maglev) compiles a function after ~400 calls,
//                and TurboFan compiles the hot ones again after ~3000. Each compilation holds a
//                few hundred KB of zone memory from malloc, several at once on V8's compiler
//                threads, and glibc keeps what they freed: the sidecar's malloc heap grew from
//                ~7 to ~20 MB within seconds of taking traffic. Without Maglev, functions go from
//                the baseline compiler straight to TurboFan: the same CPU per call at saturation,
//                ~5 MB less peak RSS, ~10 MB less at 2000 calls/s (docs/performance.md,
//                "Node and V8 settings").
//   --no-allocation-site-pretenuring
//                V8 allocates objects straight into the old generation from a site whose objects
//                mostly outlived their first scavenge. Under load (a 1 MB young generation, 128
//                calls in flight) a call's objects do, and V8 then pretenured them in some
//                processes; an old object, dead or alive, keeps what it points to through every
//                scavenge, so the call's young objects were promoted too, until the next full
//                collection. Measured at 5a5040a, gRPC saturation: 10-11 full collections per
//                100 000 calls without pretenuring, 10 to 30 with it, run to run; CPU per call
//                -12 to -24%, peak RSS unchanged (docs/performance.md).
//
// WARD_V8_FLAGS replaces the list; empty keeps V8's defaults; an item this V8 does not take
// stops ward with status 2. The compile cache's entries are
// per V8 flags, so bin/warm-compile-cache.js applies the same list before it fills the cache.
import { spawnSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';

export const DEFAULT_V8_FLAGS = '--no-maglev --no-allocation-site-pretenuring';

const FLAG = /^--[a-z][a-z0-9_-]*(=[^\s=]+)?$/;

/**
 * Applies WARD_V8_FLAGS (or the default list) to this process. Returns the flags applied; throws,
 * before applying any, for an item that is not spelled as a V8 flag, or (a list other than the
 * default) that this V8 does not know or would not take: V8 itself only prints a line to stderr
 * and goes on without the flag, so a misspelt `--no-maglve` ran the sidecar with Maglev on.
 */
export function applyV8Flags(env = process.env) {
  const list = (env.WARD_V8_FLAGS ?? DEFAULT_V8_FLAGS).split(/\s+/).filter((f) => f !== '');
  for (const f of list) {
    if (!FLAG.test(f)) throw new Error(`WARD_V8_FLAGS: '${f}' is not a V8 flag (spelled --name or --name=value)`);
  }
  if (list.join(' ') !== DEFAULT_V8_FLAGS && list.length > 0) checkAgainstV8(list);
  for (const f of list) setFlagsFromString(f);
  return list;
}

/**
 * Checks each item against `node --v8-options`, this binary's own list (~75 ms, and only for a
 * list an operator chose): the name, `--no-` only for a boolean, and a value of the flag's type.
 */
function checkAgainstV8(list) {
  const r = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8', env: {}, timeout: 10_000, maxBuffer: 8 * 1024 * 1024 });
  if (r.status !== 0 || typeof r.stdout !== 'string') {
    throw new Error(`WARD_V8_FLAGS: cannot list this V8's flags to check them (${r.error?.message ?? `status ${r.status}`}); unset WARD_V8_FLAGS or fix the list`);
  }
  /** flag name (dashes) -> its type: bool, int, uint, size_t, uint64, float, string */
  const types = new Map();
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length - 1; i++) {
    const name = /^ {2}--([a-z0-9-]+) /.exec(lines[i])?.[1];
    const type = /^ +type: (\S+)/.exec(lines[i + 1])?.[1];
    if (name !== undefined && type !== undefined) types.set(name, type);
  }
  for (const f of list) {
    const eq = f.indexOf('=');
    let name = (eq < 0 ? f.slice(2) : f.slice(2, eq)).replaceAll('_', '-');
    const value = eq < 0 ? undefined : f.slice(eq + 1);
    let type = types.get(name);
    // A boolean is negated as --no-name or --noname (V8 takes both).
    const negated = name.startsWith('no-') ? name.slice(3) : name.startsWith('no') ? name.slice(2) : undefined;
    if (type === undefined && negated !== undefined && types.get(negated) === 'bool') {
      name = negated;
      type = value === undefined ? 'bool' : 'negated';
    }
    if (type === undefined) throw new Error(`WARD_V8_FLAGS: '${f}': this V8 has no flag --${name} (node --v8-options lists them)`);
    if (!valueFits(type, value)) throw new Error(`WARD_V8_FLAGS: '${f}': --${name} takes ${type === 'bool' || type === 'negated' ? 'no value' : `a value of type ${type}`}`);
  }
}

function valueFits(type, value) {
  switch (type) {
    case 'bool':
    case 'negated':
      return value === undefined;
    case 'int':
      return value !== undefined && /^-?\d+$/.test(value);
    case 'uint':
    case 'size_t':
    case 'uint64':
      return value !== undefined && /^\d+$/.test(value);
    case 'float':
      return value !== undefined && Number.isFinite(Number(value));
    default:
      return value !== undefined; // string and anything newer
  }
}
