import { parse as parseYaml, stringify } from 'yaml';
import { parseSidecarConfig, sidecarConfigSchema } from '../config/sidecar.ts';
import { ConfigError } from '../errors/ward-error.ts';

/**
 * The sidecar config an injected pod runs with. It is generated per pod template from the
 * injector's settings and the pod's annotations, then checked with the very parser the sidecar
 * uses at start-up (`parseSidecarConfig`): a config the sidecar would refuse is refused at
 * admission, where the error is visible, rather than in a crash-looping container.
 */

export const CONFIG_PATH = '/var/run/ward/sidecar.yaml';
export const POLICY_DIR = '/etc/ward/policy';
export const POLICY_FILE = `${POLICY_DIR}/policy.yaml`;
export const CLIENT_DIR = '/etc/ward/client';
export const CLIENT_SECRET_FILE = `${CLIENT_DIR}/client-secret`;
export const STATE_DIR = '/var/lib/ward';
export const CONTROL_PLANE_CA_DIR = '/etc/ward/control-plane-ca';
export const CONTROL_PLANE_CA_FILE = `${CONTROL_PLANE_CA_DIR}/ca.crt`;
export const INBOUND_TLS_DIR = '/etc/ward/inbound-tls';
export const OUTBOUND_CA_DIR = '/etc/ward/outbound-ca';

export interface SidecarConfigInput {
  readonly service: string;
  readonly inboundPort: number;
  readonly adminPort: number;
  /** null: no egress listener (outbound capture off). */
  readonly outboundPort: number | null;
  readonly appPort: number;
  readonly appProtocol: 'h2c' | 'http1';
  readonly policy:
    | { readonly kind: 'file' }
    | { readonly kind: 'controlPlane'; readonly address: string; readonly issuer: string; readonly caFile?: string };
  /** Client credentials mounted from a Secret (control plane, or introspection with a file policy). */
  readonly credentials: { readonly issuer: string; readonly clientId: string } | null;
  readonly drainSeconds: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** The workload's certificate is mounted at INBOUND_TLS_DIR: serve TLS on the inbound port too. */
  readonly inboundTls?: boolean;
  /** The `ward.dev/sidecar-config` annotation, merged over the generated object. */
  readonly overrides: string | undefined;
}

/** Whether this image's sidecar has an egress listener (its config schema knows `outbound`). */
export function sidecarHasEgressListener(): boolean {
  return 'outbound' in sidecarConfigSchema.shape;
}

/** Builds, merges and validates; returns the YAML text, or throws Error listing every problem. */
export function buildSidecarConfig(input: SidecarConfigInput): string {
  const cfg: Record<string, unknown> = {
    service: input.service,
    // 0.0.0.0: REDIRECT in PREROUTING rewrites the destination to the pod's own address.
    inbound: {
      listen: { host: '0.0.0.0', port: input.inboundPort },
      // no TLS port of its own: TLS is sniffed on the captured port, where every connection arrives
      ...(input.inboundTls === true ? { tls: { certFile: `${INBOUND_TLS_DIR}/tls.crt`, keyFile: `${INBOUND_TLS_DIR}/tls.key` } } : {}),
    },
    upstream: { url: `http://127.0.0.1:${input.appPort}`, protocol: input.appProtocol },
    // Not loopback: kubelet probes come from the node to the pod IP (the port is never captured).
    admin: { host: '0.0.0.0', port: input.adminPort },
  };
  if (input.policy.kind === 'file') {
    cfg['policy'] = { file: POLICY_FILE };
  } else {
    cfg['policy'] = {
      controlPlane: {
        address: input.policy.address,
        stateDir: STATE_DIR,
        issuer: input.policy.issuer,
        ...(input.policy.caFile === undefined ? {} : { tls: { caFile: input.policy.caFile } }),
      },
    };
  }
  if (input.credentials !== null) {
    cfg['authn'] = { credentials: [{ issuer: input.credentials.issuer, clientId: input.credentials.clientId, clientSecretFile: CLIENT_SECRET_FILE }] };
  }
  if (input.outboundPort !== null) {
    // REDIRECT in OUTPUT sends the app's connections to 127.0.0.1:<port>.
    cfg['outbound'] = { listen: { host: '127.0.0.1', port: input.outboundPort } };
  }
  cfg['drainTimeoutMs'] = input.drainSeconds * 1000;
  cfg['logLevel'] = input.logLevel;

  let merged: unknown = cfg;
  if (input.overrides !== undefined) {
    let extra: unknown;
    try {
      extra = parseYaml(input.overrides, { strict: true, uniqueKeys: true });
    } catch (err) {
      throw new Error(`ward.dev/sidecar-config is not valid YAML: ${firstLine((err as Error).message)}`, { cause: err });
    }
    if (!isPlainObject(extra)) throw new Error('ward.dev/sidecar-config must be a YAML mapping');
    merged = deepMerge(cfg, extra);
    const moved = capturedPortsMoved(merged, input);
    if (moved.length > 0) throw new Error(`ward.dev/sidecar-config: ${moved.join('; ')}`);
  }

  const text = stringify(merged, { lineWidth: 0 });
  try {
    parseSidecarConfig(text, 'sidecar config');
  } catch (err) {
    if (err instanceof ConfigError) {
      throw new Error(`the generated sidecar config is invalid: ${err.issues.map((i) => `${i.path === '' ? '' : `${i.path}: `}${i.message}`).join('; ')}`, { cause: err });
    }
    throw err;
  }
  return text;
}

/**
 * What an override changed that traffic capture depends on. ward-init's rules, the probes and
 * the app-port checks are built from the injector's values, so an override moving the app, a
 * listener or the admin port would leave them pointing elsewhere (found in review: an
 * `upstream.url` on a port listed in `ward.dev/exclude-inbound-ports` was admitted, and that
 * port, where the app listened, was left uncaptured; an egress listener on 0.0.0.0 was reachable
 * from the network). Those values come from their own annotations instead.
 */
function capturedPortsMoved(merged: unknown, input: SidecarConfigInput): string[] {
  const at = (path: readonly string[]): unknown => path.reduce<unknown>((o, k) => (isPlainObject(o) ? o[k] : undefined), merged);
  const out: string[] = [];
  const url = at(['upstream', 'url']);
  let app: URL | null;
  try {
    app = typeof url === 'string' ? new URL(url) : null;
  } catch {
    app = null; // the config parser names it
  }
  if (app !== null) {
    const port = app.port === '' ? (app.protocol === 'https:' ? 443 : 80) : Number(app.port);
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(app.hostname) || port !== input.appPort) {
      out.push(`upstream.url must stay on loopback port ${input.appPort}, where capture expects the app (set ward.dev/app-port to move it)`);
    }
  }
  if (at(['inbound', 'listen', 'port']) !== input.inboundPort) out.push(`inbound.listen.port is the capture's redirect target (${input.inboundPort}), set by the injector`);
  if (at(['admin', 'port']) !== input.adminPort) out.push(`admin.port is the probes' port (${input.adminPort}), set by the injector`);
  const egressHost = at(['outbound', 'listen', 'host']);
  if (input.outboundPort !== null && (egressHost !== '127.0.0.1' || at(['outbound', 'listen', 'port']) !== input.outboundPort)) {
    out.push(`outbound.listen must stay 127.0.0.1:${input.outboundPort}, where capture sends the app's connections (and never reachable from the network)`);
  } else if (input.outboundPort === null && egressHost !== undefined && (typeof egressHost !== 'string' || !['127.0.0.1', 'localhost', '::1'].includes(egressHost))) {
    // No capture: an app that uses the egress listener names it, on loopback; on any other
    // address whoever reaches the pod could send calls as this workload.
    out.push('outbound.listen.host must be a loopback address: the egress listener acts as this workload');
  }
  return out;
}

/** Objects merge key by key; anything else (lists included) is replaced by the override. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue;
    out[k] = Object.hasOwn(out, k) ? deepMerge(out[k], v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function firstLine(s: string): string {
  const nl = s.indexOf('\n');
  return nl === -1 ? s : s.slice(0, nl);
}

/** Whether a config built here requires TLS of the network (`inbound.tls.mode: strict`, from the overrides). */
export function requiresTls(configYaml: string): boolean {
  const cfg = parseYaml(configYaml) as { inbound?: { tls?: { mode?: unknown } } } | null;
  return cfg?.inbound?.tls?.mode === 'strict';
}
