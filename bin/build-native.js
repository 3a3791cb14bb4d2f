#!/usr/bin/env node
// Builds ward's native addons with the machine's C compiler against the Node-API (and OpenSSL)
// headers of the Node that runs this script. npm runs it after `npm ci` (the package's
// `install` script); the image build runs it with --require.
//
//   native/build/file-pages.node   native/file-pages.c: the madvise call behind src/lib/file-pages.ts
//   native/build/jws-verify.node   native/jws-verify.c: RS256/384/512 checks with node's own
//                                  OpenSSL, behind src/authn/native-verify.ts
//
//   node bin/build-native.js            build; without a compiler or headers, say so and exit 0
//   node bin/build-native.js --require  the same, but exit 1 when one cannot be built
//
// Nothing is downloaded: the headers are the ones shipped with the Node binary (an official
// tarball's include/node, or the npm `node` package's node-<platform>-<arch>/include/node).
// CC names the compiler (default cc). Without an addon ward works as before, without what it
// buys (docs/performance.md).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'native', 'build');
const required = process.argv.includes('--require');

const ADDONS = [
  { name: 'file-pages', without: 'the file pages it does not use stay resident' },
  { name: 'jws-verify', without: 'RSA signatures are checked with crypto.verify' },
];

function headerDirs() {
  const dirs = [];
  try {
    dirs.push(join(dirname(realpathSync(process.execPath)), '..', 'include', 'node'));
  } catch {
    // no real path for the executable: only the npm package's copy below
  }
  const pkg = `node-${process.platform}-${process.arch}`;
  dirs.push(join(root, 'node_modules', 'node', 'node_modules', pkg, 'include', 'node'));
  dirs.push(join(root, 'node_modules', pkg, 'include', 'node'));
  return dirs;
}

let failed = false;

function skip(addon, reason) {
  const line = `ward: native/build/${addon.name}.node not built: ${reason}. ward runs without it (${addon.without}; docs/performance.md).`;
  if (required) {
    console.error(line);
    failed = true;
  } else {
    console.log(line);
  }
}

const cc = process.env.CC || 'cc';
const headers = headerDirs().find((d) => existsSync(join(d, 'node_api.h')));
for (const addon of ADDONS) {
  const source = join(root, 'native', `${addon.name}.c`);
  const out = join(outDir, `${addon.name}.node`);
  if (process.platform !== 'linux') {
    skip(addon, `ward builds its addons on Linux only (this is ${process.platform})`);
    continue;
  }
  if (headers === undefined) {
    skip(addon, `no node_api.h beside this Node (looked in ${headerDirs().join(', ')})`);
    continue;
  }
  mkdirSync(outDir, { recursive: true });
  // Written under a temporary name and renamed: a process loading the addon never sees half a file.
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', `-I${headers}`, '-o', tmp, source], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, out);
    console.log(`ward: built ${out}`);
  } catch (err) {
    rmSync(tmp, { force: true });
    const stderr = err && typeof err === 'object' && 'stderr' in err && err.stderr ? String(err.stderr).trim().split('\n').slice(0, 5).join(' | ') : '';
    skip(addon, err && err.code === 'ENOENT' ? `no C compiler (${cc}; set CC, or install gcc)` : `${cc} failed${stderr === '' ? '' : `: ${stderr}`}`);
  }
}
if (failed) process.exit(1);
