#!/usr/bin/env node
// Fills ward's compile cache (compile-cache.js) with every module under src/ and what they
// import, so that no later `ward` command loads the type stripper. deploy/Dockerfile runs it at
// build time as the uid the sidecar runs as (Node keeps one cache per uid).
//
//   node bin/warm-compile-cache.js
import { readdirSync } from 'node:fs';
import { constants, flushCompileCache } from 'node:module';
import { URL } from 'node:url';
import { enableCompileCache } from './compile-cache.js';
import { applyV8Flags } from './v8-flags.js';

// The same V8 flags as bin/ward.js: the cache's entries are per flags.
applyV8Flags();
const result = enableCompileCache();
if (result.status !== constants.compileCacheStatus.ENABLED && result.status !== constants.compileCacheStatus.ALREADY_ENABLED) {
  console.error(`warm-compile-cache: the compile cache is not enabled: ${result.message ?? 'NODE_DISABLE_COMPILE_CACHE is set'}`);
  process.exitCode = 1;
} else {
  const src = new URL('../src/', import.meta.url);
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  // Importing compiles and evaluates; no module under src/ does anything at import time.
  for (const f of files) await import(new URL(f, src).href);
  flushCompileCache();
  console.log(`warm-compile-cache: ${files.length} modules of src/ in ${result.directory}`);
}
