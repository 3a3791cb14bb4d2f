#!/usr/bin/env node
// The `ward` command. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between `npm ci` and `npx ward`.
import { enableCompileCache } from './compile-cache.js';

// Before the first TypeScript module, which is why main.ts is imported dynamically.
enableCompileCache();
const { main } = await import('../src/cli/main.ts');

process.exitCode = await main(process.argv.slice(2));
