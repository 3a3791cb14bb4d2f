/**
 * The per-pod annotations the injector reads, each with its default and meaning in one place:
 * docs/kubernetes.md lists them, and a test fails when one is missing there.
 *
 * Any other `ward.dev/...` annotation is refused: a misspelt `exclude-inbound-port` must not
 * silently leave a port uncaptured.
 */

export interface AnnotationSpec {
  readonly name: string;
  readonly default: string;
  readonly description: string;
}

const P = 'ward.dev/';

export const A = {
  inject: `${P}inject`,
  status: `${P}status`,
  service: `${P}service`,
  appPort: `${P}app-port`,
  appProtocol: `${P}app-protocol`,
  inboundPorts: `${P}inbound-ports`,
  excludeInboundPorts: `${P}exclude-inbound-ports`,
  captureOutbound: `${P}capture-outbound`,
  excludeOutboundPorts: `${P}exclude-outbound-ports`,
  excludeOutboundCidrs: `${P}exclude-outbound-cidrs`,
  policyConfigMap: `${P}policy-configmap`,
  policyKey: `${P}policy-key`,
  controlPlane: `${P}control-plane`,
  clientIssuer: `${P}client-issuer`,
  controlPlaneCa: `${P}control-plane-ca`,
  inboundTlsSecret: `${P}inbound-tls-secret`,
  outboundCa: `${P}outbound-ca`,
  clientId: `${P}client-id`,
  clientSecret: `${P}client-secret`,
  cpu: `${P}proxy-cpu`,
  memory: `${P}proxy-memory`,
  cpuLimit: `${P}proxy-cpu-limit`,
  memoryLimit: `${P}proxy-memory-limit`,
  drainSeconds: `${P}drain-seconds`,
  nativeSidecar: `${P}native-sidecar`,
  logLevel: `${P}log-level`,
  sidecarConfig: `${P}sidecar-config`,
} as const;

export const ANNOTATIONS: readonly AnnotationSpec[] = [
  { name: A.inject, default: '\u2014', description: '`enabled`/`true` opts the pod in (also as a pod label, which the webhook\'s selector sees; as a label the value is matched exactly, lower case), `disabled`/`false` opts it out even in an enrolled namespace.' },
  { name: A.service, default: 'label `app.kubernetes.io/name`, then `app`, then the workload name', description: 'Service name of the sidecar; must equal the `service:` of its policy.' },
  { name: A.appPort, default: 'first TCP `containerPort` of the first container, else 8080', description: 'Port the app listens on (on loopback or all addresses); the sidecar forwards allowed calls to `127.0.0.1:<port>`.' },
  { name: A.appProtocol, default: '`h2c` if that port\'s name starts with `grpc`, `h2c` or `http2`, else `http1`', description: 'How the sidecar talks to the app: `h2c` (HTTP/2 cleartext, gRPC) or `http1`.' },
  { name: A.inboundPorts, default: '`*`', description: 'Inbound TCP ports redirected to the sidecar: `*` (every port, so nothing reaches the app around it) or a comma-separated list, which must include the app port (a pod whose list leaves it out is refused).' },
  { name: A.excludeInboundPorts, default: '(none)', description: 'Inbound ports never redirected (comma-separated). The admin port is always excluded, so kubelet probes reach it. The app port cannot be (the pod is refused): callers would reach the app on it without the sidecar.' },
  { name: A.captureOutbound, default: '`true` (when the sidecar has an egress listener)', description: '`false` leaves the app\'s outbound traffic alone.' },
  { name: A.excludeOutboundPorts, default: '`53`', description: 'Outbound TCP ports never redirected, added to the injector\'s list.' },
  { name: A.excludeOutboundCidrs, default: '(none)', description: 'Outbound destinations (IPv4/IPv6 CIDRs, comma-separated) never redirected, e.g. a database subnet.' },
  { name: A.policyConfigMap, default: '`ward-policy-<service>`', description: 'ConfigMap in the pod\'s namespace holding the policy file (policy from a file; ignored with a control plane).' },
  { name: A.policyKey, default: '`policy.yaml`', description: 'Key of the policy file in that ConfigMap.' },
  { name: A.controlPlane, default: 'the injector\'s `--control-plane`', description: '`host:port` of `ward control-plane`: the sidecar takes its policy from it instead of a ConfigMap (needs the sidecar\'s own client, below). `none` forces the ConfigMap.' },
  { name: A.controlPlaneCa, default: 'the injector\'s `--control-plane-ca`', description: 'ConfigMap in the pod\'s namespace whose key `ca.crt` holds the CA of the control plane\'s TLS certificate, mounted read-only: the sidecar then reaches the control plane over TLS (`policy.controlPlane.tls`). `none`: cleartext.' },
  { name: A.inboundTlsSecret, default: '(none)', description: 'Secret in the pod\'s namespace (keys `tls.crt`, `tls.key`, as cert-manager writes them) with the workload\'s certificate, mounted read-only: the sidecar then also serves TLS on its captured port (`inbound.tls`; a connection that opens with a TLS handshake gets TLS, others cleartext as before) and re-reads the certificate when it is renewed.' },
  { name: A.outboundCa, default: '(none)', description: 'ConfigMap in the pod\'s namespace whose key `ca.crt` is mounted read-only at `/etc/ward/outbound-ca/ca.crt`, for the `tls.caFile` of `https://` destinations (set in `ward.dev/sidecar-config`).' },
  { name: A.clientIssuer, default: 'the injector\'s `--client-issuer`', description: 'Issuer of the sidecar\'s own OAuth client (`authn.credentials`): its token for the control plane, introspection, outbound token exchange. Without one the sidecar has no client.' },
  { name: A.clientId, default: '`<service>-sidecar`', description: 'The sidecar\'s OAuth client id at that issuer.' },
  { name: A.clientSecret, default: '`ward-client-<service>`', description: 'Secret in the pod\'s namespace (key `client-secret`) holding that client\'s secret, mounted read-only.' },
  { name: A.cpu, default: 'injector `--proxy-cpu` (`50m`)', description: 'Sidecar CPU request.' },
  { name: A.memory, default: 'injector `--proxy-memory` (`128Mi`)', description: 'Sidecar memory request.' },
  { name: A.cpuLimit, default: 'injector `--proxy-cpu-limit` (`1`)', description: 'Sidecar CPU limit.' },
  { name: A.memoryLimit, default: 'injector `--proxy-memory-limit` (`256Mi`)', description: 'Sidecar memory limit.' },
  { name: A.drainSeconds, default: 'injector `--drain-seconds` (`10`)', description: 'How long in-flight calls may finish on shutdown; the grace period is raised to fit.' },
  { name: A.nativeSidecar, default: 'injector `--native-sidecar` (`true`)', description: '`true`: an init container with `restartPolicy: Always` (Kubernetes \u2265 1.29; Jobs complete, starts before the app). `false`: a regular container.' },
  { name: A.logLevel, default: '`info`', description: 'Sidecar log level: `debug`, `info`, `warn`, `error`.' },
  { name: A.sidecarConfig, default: '(none)', description: 'YAML (or JSON) merged over the generated sidecar config (objects merged, lists replaced), e.g. `identityHeaders` or `authn` settings; the result is validated like any sidecar config.' },
  { name: A.status, default: 'set by the injector', description: 'Marks an injected pod; injection never happens twice.' },
];

const KNOWN = new Set(ANNOTATIONS.map((a) => a.name));

export function isKnownAnnotation(name: string): boolean {
  return KNOWN.has(name);
}

export function isWardAnnotation(name: string): boolean {
  return name.startsWith(P);
}

/**
 * A label's switch, read as the API server's label selectors read it (the webhook's
 * `namespaceSelector`/`objectSelector`): exactly `true`/`enabled` -> true, `false`/`disabled` ->
 * false, absent -> undefined; anything else -> null (invalid). `Enabled` is not `enabled` there,
 * so it is not here either (found in review: `ward inject` injected a pod whose namespace was
 * labelled `Enabled`, which the webhook never sees).
 */
export function parseLabelSwitch(value: string | undefined): boolean | undefined | null {
  if (value === undefined) return undefined;
  if (value === 'true' || value === 'enabled') return true;
  if (value === 'false' || value === 'disabled') return false;
  return null;
}

/** `true`/`enabled` -> true, `false`/`disabled` -> false, absent -> undefined; anything else -> null (invalid). */
export function parseSwitch(value: string | undefined): boolean | undefined | null {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (v === 'true' || v === 'enabled') return true;
  if (v === 'false' || v === 'disabled') return false;
  return null;
}
