import { writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const { WebAssembly } = globalThis;

/**
 * `node --import test/support/record-loads.js …`: records every module the process loads (its
 * URL, and Node's own internal modules from `process.moduleLoadList`) and every WebAssembly
 * compilation (`WebAssembly.<function>`), and writes them, one per line, to the file named by
 * WARD_TEST_RECORD_LOADS when the process exits. For tests of what a command does not load
 * (test/integration/sidecar-footprint.test.ts). Plain JavaScript, so that loading it never needs
 * the type stripper itself.
 */
const out = process.env['WARD_TEST_RECORD_LOADS'];
const urls = new Set();
for (const name of ['compile', 'compileStreaming', 'instantiate', 'instantiateStreaming']) {
  const original = WebAssembly[name];
  WebAssembly[name] = function (...args) {
    urls.add(`WebAssembly.${name}`);
    return original.apply(this, args);
  };
}
const OriginalModule = WebAssembly.Module;
WebAssembly.Module = function Module(...args) {
  urls.add('WebAssembly.Module');
  return new OriginalModule(...args);
};
registerHooks({
  load(url, context, next) {
    urls.add(url);
    return next(url, context);
  },
});
process.on('exit', () => {
  // Undocumented but long-standing: `NativeModule internal/…` for each of Node's own modules.
  const internal = process.moduleLoadList ?? [];
  if (out !== undefined) writeFileSync(out, [...urls, ...internal].join('\n') + '\n');
});
