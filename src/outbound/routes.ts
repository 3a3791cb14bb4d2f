import { resolve } from 'node:path';
import type { OutboundConfig } from '../config/outbound.ts';
import { readReferencedFile } from '../config/sidecar.ts';
import type { CaSource } from '../h2/conn.ts';
import { rereadCaFile } from '../lib/ca-file.ts';
import { validAuthority } from '../lib/normalize.ts';
import type { TokenTarget } from '../exchange/token-client.ts';
import { createRelay, type Relay, type RelayOptions, type UpstreamTls } from '../inbound/forward.ts';
import type { ErrorResponder } from '../inbound/respond.ts';
import { RequestSlots } from '../inbound/slots.ts';
import type { Logger } from '../lib/log.ts';
import type { YamlLocator } from '../lib/yaml-locate.ts';

/**
 * Where an outgoing call goes. Declared destinations are compiled once into a `Map` by name,
 * each with its own connection pool (the inbound forwarder's transport, `createRelay`).
 * Pass-through targets (only with `passthrough: true`) get a pool per `host:port` and protocol,
 * created on first use and bounded (least recently used closed first).
 */

export const PASSTHROUGH = '(passthrough)';

export interface Route {
  /** The destination name, or PASSTHROUGH. */
  readonly name: string;
  /** What to ask the IdP for; null for pass-through (no token is added). */
  readonly target: TokenTarget | null;
  readonly noToken: 'refuse' | 'client-credentials';
  /** gRPC needs HTTP/2 to the destination. */
  readonly h2: boolean;
  readonly relay: Relay;
}

export interface Authority {
  /** Lower case, without a trailing dot; IPv6 literals keep their brackets. */
  readonly host: string;
  /** Digits, or '' when absent. */
  readonly port: string;
}

const PORT = /^\d{1,5}$/;

/**
 * Splits `host[:port]` (RFC 3986 §3.2.2; `[v6]:port`); undefined when malformed: anything the
 * inbound authority check refuses first. A `?`, `#`, `/` or `@` in the host part ends the
 * authority in a URL, so the port the app wrote (and the loop check judged) was not the one a
 * pass-through connected to: `Host: 127.0.0.1#:81` went to port 80 (found in review).
 */
export function splitAuthority(a: string): Authority | undefined {
  if (!validAuthority(a)) return undefined;
  let host: string;
  let port = '';
  if (a.charCodeAt(0) === 0x5b) {
    const end = a.indexOf(']');
    if (end < 0) return undefined;
    host = a.slice(0, end + 1);
    const rest = a.slice(end + 1);
    if (rest !== '') {
      if (rest.charCodeAt(0) !== 0x3a) return undefined;
      port = rest.slice(1);
    }
  } else {
    const i = a.indexOf(':');
    if (i >= 0) {
      if (a.indexOf(':', i + 1) >= 0) return undefined;
      host = a.slice(0, i);
      port = a.slice(i + 1);
    } else {
      host = a;
    }
  }
  if (port !== '' && (!PORT.test(port) || Number(port) > 65535)) return undefined;
  host = host.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host === '') return undefined;
  return { host, port };
}

/**
 * Whether the host of a parsed URL (WHATWG spelling: `127.1`, `2130706433` and `0x7f.1` are all
 * `127.0.0.1`, IPv6 is compressed) is this machine: loopback, the unspecified address, their
 * IPv4-mapped forms, and `localhost` names (RFC 6761 §6.3).
 */
function isLocalHost(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host.startsWith('127.') ||
    host === '0.0.0.0' ||
    host === '[::1]' ||
    host === '[::]' ||
    host.startsWith('[::ffff:7f') ||
    host === '[::ffff:0:0]'
  );
}

export interface RoutesOptions {
  readonly config: Readonly<OutboundConfig>;
  /** Relative paths in the config (a destination's `tls.caFile`) resolve against it. */
  readonly baseDir: string;
  /** The config file, named in the error about an unreadable `tls.caFile`; `locator` puts it at that field's line:column. */
  readonly configFile?: string | undefined;
  readonly locator?: YamlLocator | undefined;
  readonly responder: ErrorResponder;
  readonly counters: { upstreamErrors: number };
  readonly log: Logger;
  /** Fields under it are the sidecars' (identity headers): removed from request trailers too, as the header scan removes them from headers. */
  readonly identityPrefix: string;
}

export class Routes {
  readonly #declared = new Map<string, Route>();
  readonly #passthrough = new Map<string, Route>();
  readonly #o: RoutesOptions;
  readonly #maxPassthrough: number;
  /** The egress listener's own port: pass-through to it would loop. Set once listening. */
  selfPort = -1;
  /** Addresses that reach the egress listener besides loopback (WHATWG spelling): where it is bound, or every interface's when it is bound to all. */
  selfHosts: ReadonlySet<string> = new Set();

  constructor(o: RoutesOptions) {
    this.#o = o;
    this.#maxPassthrough = o.config.maxPassthroughTargets;
    o.config.destinations.forEach((d, i) => {
      const scope = d.scopes.join(' ');
      const tls = d.url.startsWith('https:') ? this.#tls(d.tls, i) : undefined;
      const h2 = d.protocol !== 'http1';
      this.#declared.set(d.name, {
        name: d.name,
        target: Object.freeze({ name: d.name, resource: d.resource, audience: d.audience, scope }),
        noToken: d.noToken,
        h2,
        relay: this.#relay({ ...d, protocol: h2 ? 'h2c' : 'http1', tls }, new RequestSlots(d.maxRequests)),
      });
    });
  }

  /** A destination's TLS settings, its CA file read now (a file that cannot be read fails the start, not a call) and again for each connection. */
  #tls(t: OutboundConfig['destinations'][number]['tls'], i: number): UpstreamTls {
    let ca: CaSource = null;
    if (t?.caFile !== undefined) {
      const path = resolve(this.#o.baseDir, t.caFile);
      // read again at each new connection: a CA bundle updated in place needs no restart
      ca = rereadCaFile(path, readReferencedFile(path, this.#o.configFile ?? path, ['outbound', 'destinations', i, 'tls', 'caFile'], this.#o.locator), this.#o.log);
    }
    return { ca, servername: t?.serverName };
  }

  #relay(upstream: RelayOptions['upstream'], slots?: RequestSlots): Relay {
    // identityPrefix: request trailers lose the identity fields too (found in review: only the
    // inbound relay passed it, so an app's `x-ward-subject` trailer left the pod).
    return createRelay({ upstream, responder: this.#o.responder, counters: this.#o.counters, log: this.#o.log, slots, identityPrefix: this.#o.identityPrefix });
  }

  /** The declared destination named by the authority's host, if any. */
  declared(a: Authority): Route | undefined {
    return this.#declared.get(a.host);
  }

  /**
   * A pass-through route to the authority itself, in the app's own protocol; null when it may
   * not be used (the egress listener itself, or a host that is not a plain host name or IP).
   */
  passthrough(a: Authority, h2: boolean): Route | null {
    const port = a.port === '' ? '80' : a.port;
    // Keyed by the authority as written: only one that passed the checks below is ever stored,
    // so a hit needs no URL parse.
    const key = `${h2 ? 'h2c' : 'http1'} ${a.host}:${port}`;
    const hit = this.#passthrough.get(key);
    if (hit !== undefined) {
      // re-insert: least recently used first in iteration order
      this.#passthrough.delete(key);
      this.#passthrough.set(key, hit);
      return hit;
    }
    let url: URL;
    try {
      url = new URL(`http://${a.host}:${port}/`);
    } catch {
      return null;
    }
    // Exactly the host and port written, or nothing: whatever else the URL parser made of the
    // text (userinfo, a path, a query or fragment that swallowed the port) is not that address.
    if (url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || Number(url.port === '' ? '80' : url.port) !== Number(port)) return null;
    // The loop is judged on the address as it will be connected to: `Host: 127.1:<egress port>`
    // passed a check on the text and came back here until the pool was full (found in review).
    if (Number(port) === this.selfPort && (isLocalHost(url.hostname) || this.selfHosts.has(url.hostname))) return null;
    if (this.#passthrough.size >= this.#maxPassthrough) {
      const oldest = this.#passthrough.entries().next();
      if (oldest.done !== true) {
        this.#passthrough.delete(oldest.value[0]);
        // Its calls in flight finish (regression: `close` destroyed their sockets: 502).
        oldest.value[1].relay.retire();
      }
    }
    const route: Route = {
      name: PASSTHROUGH,
      target: null,
      noToken: 'refuse',
      h2,
      relay: this.#relay({ url: url.origin, protocol: h2 ? 'h2c' : 'http1', connectTimeoutMs: 2000, requestTimeoutMs: 0, maxSessions: 1, maxSockets: 16 }),
    };
    this.#passthrough.set(key, route);
    return route;
  }

  #all(): Route[] {
    return [...this.#declared.values(), ...this.#passthrough.values()];
  }

  async close(): Promise<void> {
    await Promise.all(this.#all().map((r) => r.relay.close()));
  }

  destroy(): void {
    for (const r of this.#all()) r.relay.destroy();
  }
}

/**
 * The addresses, spelled as a parsed URL spells them, at which a listener bound to `host` can be
 * reached: `host` itself, or every interface's address when it is the unspecified address.
 */
export function boundHosts(host: string, interfaces: NodeJS.Dict<readonly { readonly address: string; readonly family: string }[]>): ReadonlySet<string> {
  const spell = (h: string): string | null => {
    try {
      return new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname;
    } catch {
      return null;
    }
  };
  const out = new Set<string>();
  const all = host === '0.0.0.0' || host === '::' || host === '[::]';
  const list = all ? Object.values(interfaces).flatMap((l) => (l ?? []).map((i) => i.address)) : [host.replace(/^\[(.*)\]$/, '$1')];
  for (const a of list) {
    const h = spell(a);
    if (h !== null) out.add(h);
  }
  return out;
}
