/**
 * Injector-wide settings: what every injected pod gets unless its annotations say otherwise.
 * `ward inject` and `ward injector` take them from flags; the defaults mirror Istio's layout
 * (15000 admin, 15001 egress, 15006 inbound, uid 1337) so operators find familiar numbers.
 */

export interface ResourceSettings {
  readonly cpuRequest: string;
  readonly memoryRequest: string;
  readonly cpuLimit: string;
  readonly memoryLimit: string;
}

export interface InjectorSettings {
  /** The ward image: it holds both the sidecar and `ward capture` (iptables included). */
  readonly image: string;
  readonly imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** The sidecar's inbound listener; captured inbound TCP is redirected here. */
  readonly inboundPort: number;
  /** The sidecar's egress listener; the app's captured outbound TCP is redirected here. */
  readonly outboundPort: number;
  /** Admin listener (/healthz, /readyz): never captured, so kubelet probes reach it. */
  readonly adminPort: number;
  /** uid/gid the sidecar runs as; iptables exempts its own traffic by this uid (no loop). */
  readonly proxyUid: number;
  readonly proxyGid: number;
  readonly resources: ResourceSettings;
  /**
   * `NODE_OPTIONS` of the sidecar container ('' for none): Node/V8 settings, measured in
   * docs/performance.md. A flag Node does not accept in NODE_OPTIONS stops the sidecar at start-up.
   */
  readonly nodeOptions: string;
  /** Run the sidecar as a native sidecar (init container with restartPolicy Always, Kubernetes >= 1.29). */
  readonly nativeSidecar: boolean;
  /**
   * Capture the app's outbound traffic. Only meaningful when the sidecar in this image has an
   * egress listener (`outbound` in its config schema); otherwise outbound capture is off.
   */
  readonly captureOutbound: boolean;
  /** Default control plane (`host:port`); pods then take policy from it instead of a ConfigMap. */
  readonly controlPlane: string | null;
  /** Issuer of the sidecars' own OAuth clients (control-plane token, introspection, token exchange); null: none. */
  readonly clientIssuer: string | null;
  /**
   * ConfigMap (in the pod's namespace, key `ca.crt`) with the CA of the control plane's TLS
   * certificate: sidecars then reach the control plane over TLS. null: cleartext.
   */
  readonly controlPlaneCa: string | null;
  /** How long the sidecar lets in-flight calls finish on SIGTERM. */
  readonly drainSeconds: number;
  /** Legacy (non-native) sidecars sleep this long in preStop so endpoints drop the pod before listeners close. */
  readonly preStopSeconds: number;
  /** Outbound TCP ports never captured (DNS over TCP: the egress listener speaks HTTP only). */
  readonly excludeOutboundPorts: readonly number[];
}

/**
 * The sidecar's V8 heap (docs/performance.md, "Node and V8 settings"): 1 MB young-generation
 * semi-spaces, short scavenges; and an old-generation limit just under 2 GB, where V8 stops letting
 * the heap grow up to 4× its live size between full collections and allows ~2× instead - the same
 * on every node whatever its memory or the container's limit, far above the sidecar's live set.
 */
export const SIDECAR_NODE_OPTIONS = '--max-semi-space-size=1 --max-old-space-size=2047';

/** Where the image keeps ward (deploy/Dockerfile); the generated commands depend on it. */
export const WARD_BIN = '/app/bin/ward.js';

export const SIDECAR_NAME = 'ward-sidecar';
export const INIT_NAME = 'ward-init';

export function defaultSettings(overrides: Partial<InjectorSettings> = {}): InjectorSettings {
  return Object.freeze({
    image: 'ward:0.1.0',
    imagePullPolicy: 'IfNotPresent',
    inboundPort: 15006,
    outboundPort: 15001,
    adminPort: 15000,
    proxyUid: 1337,
    proxyGid: 1337,
    resources: { cpuRequest: '50m', memoryRequest: '128Mi', cpuLimit: '1', memoryLimit: '256Mi' },
    nodeOptions: SIDECAR_NODE_OPTIONS,
    nativeSidecar: true,
    captureOutbound: true,
    controlPlane: null,
    clientIssuer: null,
    controlPlaneCa: null,
    drainSeconds: 10,
    preStopSeconds: 5,
    excludeOutboundPorts: [53],
    ...overrides,
  });
}
