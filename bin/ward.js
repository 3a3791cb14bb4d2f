#!/usr/bin/env node
// The `ward` command. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between `npm ci` and `npx ward`.
import { main } from '../src/cli/main.ts';

process.exitCode = await main(process.argv.slice(2));
