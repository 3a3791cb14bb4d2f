import { createRequire } from 'node:module';
import type * as NodeHttp from 'node:http';
import type * as NodeHttps from 'node:https';

/**
 * node:http, loaded with `require` instead of `import`. An ESM import of a builtin builds its
 * module namespace, which reads every export, and node:http's `WebSocket`, `CloseEvent` and
 * `MessageEvent` are getters that load undici's whole bundle (~2.6 MB of heap for classes no
 * sidecar uses); CommonJS `require` reads none of them. Types still come from
 * `import type ... from 'node:http'`, which is erased.
 */
const require = createRequire(import.meta.url);
export const http = require('node:http') as typeof NodeHttp;

/** node:https the same way, loaded only by a relay to an https:// HTTP/1.1 destination. */
export function https(): typeof NodeHttps {
  return require('node:https') as typeof NodeHttps;
}
