#!/usr/bin/env node
// Builds ward's one native addon, native/build/file-pages.node (native/file-pages.c: the
// madvise call behind src/lib/file-pages.ts), with the machine's C compiler against the
// Node-API headers of the Node that runs this script. npm runs it after `npm ci` (the package's
// `install` script); the image build runs it with --require.
//
//   node bin/build-native.js            build; without a compiler or headers, say so and exit 0
//   node bin/build-native.js --require  the same, but exit 1 when it cannot be built
//
// Nothing is downloaded: the headers are the ones shipped with the Node binary (an official
// tarball's include/node, or the npm `node` package's node-<platform>-<arch>/include/node).
// CC names the compiler (default cc). Without the addon ward works as before; it only keeps
// the file pages it does not use in its resident set (docs/performance.md, "Memory").
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'file-pages.c');
const outDir = join(root, 'native', 'build');
const out = join(outDir, 'file-pages.node');
const required = process.argv.includes('--require');

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

function skip(reason) {
  const line = `ward: native/build/file-pages.node not built: ${reason}. ward runs without it (the file pages it does not use stay resident; docs/performance.md).`;
  if (required) {
    console.error(line);
    process.exit(1);
  }
  console.log(line);
  process.exit(0);
}

if (process.platform !== 'linux') skip(`madvise over /proc/self/smaps is Linux only (this is ${process.platform})`);
const headers = headerDirs().find((d) => existsSync(join(d, 'node_api.h')));
if (headers === undefined) skip(`no node_api.h beside this Node (looked in ${headerDirs().join(', ')})`);
const cc = process.env.CC || 'cc';
mkdirSync(outDir, { recursive: true });
// Written under a temporary name and renamed: a process loading the addon never sees half a file.
const tmp = `${out}.${process.pid}.tmp`;
try {
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', `-I${headers}`, '-o', tmp, source], { stdio: ['ignore', 'pipe', 'pipe'] });
  renameSync(tmp, out);
} catch (err) {
  rmSync(tmp, { force: true });
  const stderr = err && typeof err === 'object' && 'stderr' in err && err.stderr ? String(err.stderr).trim().split('\n').slice(0, 5).join(' | ') : '';
  skip(err && err.code === 'ENOENT' ? `no C compiler (${cc}; set CC, or install gcc)` : `${cc} failed${stderr === '' ? '' : `: ${stderr}`}`);
}
console.log(`ward: built ${out}`);
