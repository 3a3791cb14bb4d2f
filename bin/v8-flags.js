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
// WARD_V8_FLAGS replaces the list; empty keeps V8's defaults. The compile cache's entries are
// per V8 flags, so bin/warm-compile-cache.js applies the same list before it fills the cache.
import { setFlagsFromString } from 'node:v8';

export const DEFAULT_V8_FLAGS = '--no-maglev --no-allocation-site-pretenuring';

const FLAG = /^--[a-z][a-z0-9_-]*(=[^\s=]+)?$/;

/**
 * Applies WARD_V8_FLAGS (or the default list) to this process. Returns the flags applied; throws,
 * before applying any, for an item that is not spelled as a V8 flag.
 */
export function applyV8Flags(env = process.env) {
  const list = (env.WARD_V8_FLAGS ?? DEFAULT_V8_FLAGS).split(/\s+/).filter((f) => f !== '');
  for (const f of list) {
    if (!FLAG.test(f)) throw new Error(`WARD_V8_FLAGS: '${f}' is not a V8 flag (spelled --name or --name=value)`);
  }
  for (const f of list) setFlagsFromString(f);
  return list;
}
