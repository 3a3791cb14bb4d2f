// `node --import test/support/term-on-start.js …`: the process sends itself SIGTERM the moment it
// writes its "sidecar started" log line, synchronously, before any later code of the same turn
// runs. For test/integration/sidecar-lifecycle.test.ts: a signal at that instant must drain the
// sidecar, not kill it. Plain JavaScript, so that loading it never needs the type stripper.
// Only in the primary of a `concurrency` > 1 sidecar: its workers log the same line.
import cluster from 'node:cluster';

const write = process.stderr.write.bind(process.stderr);
let sent = false;
process.stderr.write = (chunk, ...rest) => {
  const r = write(chunk, ...rest);
  if (!sent && cluster.isPrimary && String(chunk).includes('"msg":"sidecar started"')) {
    sent = true;
    process.kill(process.pid, 'SIGTERM');
  }
  return r;
};
