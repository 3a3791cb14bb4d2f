#!/usr/bin/env node
// The `ward` command. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between `npm ci` and `npx ward`.
import { setTimeout } from 'node:timers';
import { enableCompileCache } from './compile-cache.js';
import { applyV8Flags } from './v8-flags.js';

/** Runs `check`; a setting it refuses stops ward with status 2 and the reason. */
function orExit(check) {
  try {
    check();
  } catch (err) {
    console.error(`ward: ${err.message}`);
    process.exit(2);
  }
}

// Both before the first TypeScript module, which is why main.ts is imported dynamically: V8's
// flags first, since the compile cache's entries are per V8 flags.
orExit(applyV8Flags);
enableCompileCache();
// A sidecar's resident set drops the pages Node used to start (most of its binary's) before
// ward loads its modules, keeping its start-up peak low; it trims them again once started, and
// every 10 s (src/lib/file-pages.ts). A command that runs and exits has nothing to gain from the
// smaps read. The setting is checked for every command.
const { releaseFilePages, trimEnabled } = await import('../src/lib/file-pages.ts');
orExit(trimEnabled);
// WARD_NATIVE_VERIFY (src/authn/native-verify.ts): refused here, like the other settings, for
// every command, rather than quietly read as off by the first signature check. A sidecar loads
// the addon before the release, so that what loading it touches is released too.
const { nativeRsa, nativeVerifyEnabled } = await import('../src/authn/native-verify.ts');
orExit(nativeVerifyEnabled);
if (process.argv[2] === 'sidecar') {
  nativeRsa.preload();
  releaseFilePages();
}
const { main } = await import('../src/cli/main.ts');

const code = await main(process.argv.slice(2));
process.exitCode = code;
// A command that failed has nothing left to do: whatever it could not close (a half-started
// listener, a timer) must not keep the process, and its ports, alive. Its output goes first: a
// pipe to a slow reader (a pager) may still hold some of it (found in review).
if (code !== 0) {
  setTimeout(() => {
    let pending = 2;
    const flushed = () => {
      if (--pending === 0) process.exit(code);
    };
    process.stdout.write('', flushed);
    process.stderr.write('', flushed);
  }, 2000).unref();
}
