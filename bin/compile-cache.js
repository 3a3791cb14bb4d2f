// ward's compile cache. Node 24 runs ward's TypeScript by stripping the types, with a compiler
// shipped as WebAssembly (amaro) that stays in memory for the life of the process: ~20 MB of RSS.
// Node's compile cache keeps the stripped output (and V8's code cache) on disk; when every module
// a command loads is found there, the stripper is never loaded (docs/performance.md, "Memory").
//
// Where: NODE_COMPILE_CACHE when set (Node then enables it itself, before this runs), else
// node_modules/.cache/ward beside ward's dependencies. NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// Never fatal: a directory that cannot be created (a read-only root filesystem) means no cache,
// and a read-only one filled at build time (bin/warm-compile-cache.js, deploy/Dockerfile) is
// still read. Entries are per Node version, per uid and per source text, so a stale one is
// never used.
import module from 'node:module';
import { fileURLToPath, URL } from 'node:url';

export const DEFAULT_COMPILE_CACHE_DIR = fileURLToPath(new URL('../node_modules/.cache/ward', import.meta.url));

/** Enables the compile cache for the modules loaded from now on; returns Node's verdict. */
export function enableCompileCache() {
  return module.enableCompileCache(DEFAULT_COMPILE_CACHE_DIR);
}
