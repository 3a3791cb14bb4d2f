import type { IContainer, IPodSpec, IVolume } from 'kubernetes-models/v1';
import { A, isKnownAnnotation, isWardAnnotation, parseLabelSwitch, parseSwitch } from './annotations.ts';
import { type CaptureOptions, parseCidrList, parsePortList, validateCaptureOptions } from './capture.ts';
import { INIT_NAME, type InjectorSettings, SIDECAR_NAME, WARD_BIN } from './settings.ts';
import {
  buildSidecarConfig,
  CLIENT_DIR,
  CONFIG_PATH,
  CONTROL_PLANE_CA_DIR,
  CONTROL_PLANE_CA_FILE,
  INBOUND_TLS_DIR,
  OUTBOUND_CA_DIR,
  POLICY_DIR,
  requiresTls,
  sidecarHasEgressListener,
  STATE_DIR,
} from './sidecar-config.ts';

/**
 * Injection of one pod (or pod template): pure, synchronous, deterministic. `ward inject` and
 * the admission webhook both call `injectPod`; neither adds logic of its own.
 *
 * Outcomes:
 * - injected: the new metadata and spec (the input is not modified);
 * - skipped: the pod is left exactly as it was (not opted in, opted out, already injected,
 *   host network, another mesh's proxy);
 * - refused: the pod opted in but cannot be protected as asked (bad annotation, port clash,
 *   an app container running as the sidecar's uid...). Refusing beats starting it unprotected.
 */

export interface PodMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface PodTemplate {
  metadata?: PodMeta;
  spec: IPodSpec;
}

export interface InjectContext {
  /** The namespace carries `ward.dev/inject: enabled` (the webhook's namespaceSelector, or `ward inject --all`). */
  readonly namespaceEnabled: boolean;
  /** Name of the owning workload (Deployment...) when known: a fallback service name. */
  readonly workloadName?: string;
}

export type InjectOutcome =
  | { readonly kind: 'injected'; readonly template: PodTemplate; readonly service: string; readonly warnings: readonly string[] }
  | { readonly kind: 'skipped'; readonly reason: string }
  | { readonly kind: 'refused'; readonly problems: readonly string[] };

const SERVICE_RE = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;
const QUANTITY_RE = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const QUANTITY_SUFFIX: Readonly<Record<string, number>> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A quantity QUANTITY_RE accepts as a number (base units), for comparing a request with a limit; null for anything else. */
export function quantityValue(q: string): number | null {
  const m = QUANTITY_RE.exec(q);
  if (m === null) return null;
  const scale = QUANTITY_SUFFIX[m[3] ?? ''];
  return scale === undefined ? null : Number(m[1]) * scale;
}
const OTHER_PROXIES = new Set(['istio-proxy', 'linkerd-proxy']);
const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
/**
 * Mode of the files of the Secrets the sidecar mounts (its client secret, its TLS key). The
 * kubelet writes them owned by root, group root unless the pod sets `fsGroup` (which would
 * change the group of every volume of the app too), so the sidecar's own uid and gid (1337)
 * can only read them through the "other" bits. Only the sidecar container mounts these volumes.
 */
const SECRET_FILE_MODE = 0o444;

/** A ConfigMap or Secret name (a DNS subdomain, RFC 1123). */
const K8S_NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
/** A ConfigMap key (Kubernetes: `[-._a-zA-Z0-9]+`, at most 253 characters). */
const CONFIG_KEY = /^[-._a-zA-Z0-9]{1,253}$/;

const VOLUMES = {
  run: 'ward-run',
  initRun: 'ward-init-run',
  policy: 'ward-policy',
  state: 'ward-state',
  client: 'ward-client',
  controlPlaneCa: 'ward-control-plane-ca',
  inboundTls: 'ward-inbound-tls',
  outboundCa: 'ward-outbound-ca',
} as const;

export function injectPod(input: PodTemplate, ctx: InjectContext, settings: InjectorSettings): InjectOutcome {
  const meta = input.metadata ?? {};
  const annotations = meta.annotations ?? {};
  const labels = meta.labels ?? {};
  const spec = input.spec;
  if (spec === undefined || spec === null || !Array.isArray(spec.containers) || spec.containers.length === 0) {
    return { kind: 'refused', problems: ['the pod spec has no containers'] };
  }

  // 0. Kubernetes keeps label and annotation values as strings; a manifest written by hand may
  // not (an unquoted `true` or `8080` in YAML). Ours are refused by name rather than misread
  // (found in review: `ward inject` stopped on a TypeError).
  const notStrings = [
    ...Object.entries(annotations).filter(([k, v]) => isWardAnnotation(k) && typeof v !== 'string').map(([k]) => `annotation ${k}`),
    ...Object.entries(labels).filter(([k, v]) => isWardAnnotation(k) && typeof v !== 'string').map(([k]) => `label ${k}`),
  ];
  if (notStrings.length > 0) return { kind: 'refused', problems: notStrings.map((n) => `${n}: the value must be a string (quote it in YAML)`) };

  // 1. Should this pod be touched at all? Anything doubtful leaves it alone.
  const fromAnnotation = parseSwitch(annotations[A.inject]);
  const fromLabel = parseLabelSwitch(labels[A.inject]);
  if (fromAnnotation === null) return { kind: 'refused', problems: [`${A.inject}: '${annotations[A.inject]}' is not one of enabled, disabled, true, false`] };
  if (fromLabel === null) return { kind: 'refused', problems: [`label ${A.inject}: '${labels[A.inject]}' is not one of enabled, disabled, true, false (label values are matched exactly, as the webhook's selectors match them)`] };
  if (fromAnnotation === false || fromLabel === false) return { kind: 'skipped', reason: 'opted out' };
  if (isInjected(input)) return { kind: 'skipped', reason: 'already injected' };
  if (fromAnnotation !== true && fromLabel !== true && !ctx.namespaceEnabled) return { kind: 'skipped', reason: 'not opted in' };
  if (spec.hostNetwork === true) return { kind: 'skipped', reason: 'hostNetwork: capture would rewrite the node\'s own iptables' };
  const other = [...(spec.initContainers ?? []), ...spec.containers].find((c) => OTHER_PROXIES.has(c.name));
  if (other !== undefined) return { kind: 'skipped', reason: `another mesh's proxy is present (${other.name})` };

  // 2. Read the annotations; collect every problem rather than stopping at the first.
  const problems: string[] = [];
  for (const key of Object.keys(annotations)) {
    if (isWardAnnotation(key) && !isKnownAnnotation(key)) problems.push(`unknown annotation ${key}`);
  }
  const get = (name: string): string | undefined => {
    const v = annotations[name];
    return v === undefined ? undefined : v.trim();
  };
  const attempt = <T>(fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch (err) {
      problems.push((err as Error).message);
      return fallback;
    }
  };

  const service = serviceName(meta, ctx, get(A.service));
  if (service === null) problems.push(`cannot tell the service name: set ${A.service}`);
  else if (!SERVICE_RE.test(service)) problems.push(`${A.service}: '${service}' is not a valid service name (lower-case letters, digits, '.', '-')`);

  const app = appPort(spec.containers, get(A.appPort), get(A.appProtocol), problems);
  const sidecarPorts = new Set([settings.inboundPort, settings.outboundPort, settings.adminPort]);
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    for (const p of c.ports ?? []) {
      if (sidecarPorts.has(p.containerPort)) problems.push(`container ${c.name} uses port ${p.containerPort}, which the sidecar needs`);
    }
  }
  if (sidecarPorts.has(app.port)) problems.push(`${A.appPort}: ${app.port} is one of the sidecar's own ports`);

  const inboundRaw = get(A.inboundPorts) ?? '*';
  const inboundPorts: '*' | number[] = inboundRaw === '*' ? '*' : attempt(() => parsePortList(inboundRaw, A.inboundPorts), []).sort((x, y) => x - y);
  if (inboundPorts !== '*' && inboundPorts.length === 0) problems.push(`${A.inboundPorts}: list at least one port, or '*'`);
  const excludeInbound = attempt(() => parsePortList(get(A.excludeInboundPorts) ?? '', A.excludeInboundPorts), []);
  const excludeOutboundPorts = attempt(() => parsePortList(get(A.excludeOutboundPorts) ?? '', A.excludeOutboundPorts), []);
  const excludeOutboundCidrs = attempt(() => parseCidrList(get(A.excludeOutboundCidrs) ?? '', A.excludeOutboundCidrs), []);

  const outboundSwitch = parseSwitch(get(A.captureOutbound));
  if (outboundSwitch === null) problems.push(`${A.captureOutbound}: must be true or false`);
  const wantOutbound = outboundSwitch ?? settings.captureOutbound;
  const hasEgress = sidecarHasEgressListener();
  const warnings: string[] = [];
  if (wantOutbound && outboundSwitch === true && !hasEgress) {
    problems.push(`${A.captureOutbound}: this ward image's sidecar has no egress listener yet`);
  } else if (wantOutbound && !hasEgress) {
    warnings.push('outbound traffic is not captured: this ward image\'s sidecar has no egress listener');
  }
  const outboundPort = wantOutbound && hasEgress ? settings.outboundPort : null;

  const nativeSwitch = parseSwitch(get(A.nativeSidecar));
  if (nativeSwitch === null) problems.push(`${A.nativeSidecar}: must be true or false`);
  const native = nativeSwitch ?? settings.nativeSidecar;

  const quantity = (name: string, fallback: string): string => {
    const v = get(name) ?? fallback;
    if (!QUANTITY_RE.test(v)) problems.push(`${name}: '${v}' is not a resource quantity`);
    return v;
  };
  const resources = {
    requests: { cpu: quantity(A.cpu, settings.resources.cpuRequest), memory: quantity(A.memory, settings.resources.memoryRequest) },
    limits: { cpu: quantity(A.cpuLimit, settings.resources.cpuLimit), memory: quantity(A.memoryLimit, settings.resources.memoryLimit) },
  };
  // The API server refuses a container whose request is above its limit (found in review: the
  // pod was injected, then refused with an error naming ward-sidecar rather than the annotation).
  for (const [kind, req, lim] of [
    ['cpu', A.cpu, A.cpuLimit],
    ['memory', A.memory, A.memoryLimit],
  ] as const) {
    const r = quantityValue(resources.requests[kind]);
    const l = quantityValue(resources.limits[kind]);
    if (r !== null && l !== null && r > l) problems.push(`${req}: the ${kind} request ${resources.requests[kind]} is above the limit ${resources.limits[kind]} (${lim})`);
  }

  const drainRaw = get(A.drainSeconds);
  let drainSeconds = settings.drainSeconds;
  if (drainRaw !== undefined) {
    if (/^\d{1,4}$/.test(drainRaw) && Number(drainRaw) <= 3600) drainSeconds = Number(drainRaw);
    else problems.push(`${A.drainSeconds}: '${drainRaw}' is not a number of seconds (0-3600)`);
  }
  const logLevelRaw = get(A.logLevel) ?? 'info';
  const logLevel = LOG_LEVELS.find((l) => l === logLevelRaw) ?? 'info';
  if (logLevel !== logLevelRaw) problems.push(`${A.logLevel}: '${logLevelRaw}' is not debug, info, warn or error`);

  // The sidecar's uid exempts traffic from capture: an app running as it would bypass the sidecar.
  for (const [who, sc] of [['the pod', spec.securityContext] as const, ...[...(spec.initContainers ?? []), ...spec.containers].map((c) => [`container ${c.name}`, c.securityContext] as const)]) {
    if (sc?.runAsUser === settings.proxyUid) problems.push(`${who} runs as uid ${settings.proxyUid}, the sidecar's: its traffic would bypass capture`);
    if (sc?.runAsGroup === settings.proxyGid) problems.push(`${who} runs as gid ${settings.proxyGid}, the sidecar's: its traffic would bypass capture`);
  }
  // ...and so would a process of the app that gets the sidecar's gid as a supplementary group:
  // xt_owner matches the fsgid only, but a member of the group may `chmod g+s` a file of that
  // group (an fsGroup volume is group-writable) and run it with egid 1337 (found in review).
  // Only the pod's securityContext has these fields; fsGroup also applies to every container.
  const podSc = spec.securityContext;
  if (podSc?.fsGroup === settings.proxyGid) problems.push(`the pod's fsGroup is ${settings.proxyGid}, the sidecar's gid: every container gets it, and a setgid file of that group would bypass capture`);
  if (Array.isArray(podSc?.supplementalGroups) && podSc.supplementalGroups.includes(settings.proxyGid)) {
    problems.push(`the pod's supplementalGroups include ${settings.proxyGid}, the sidecar's gid: a setgid file of that group would bypass capture`);
  }
  const taken = new Set(Object.values(VOLUMES) as string[]);
  for (const v of spec.volumes ?? []) if (taken.has(v.name)) problems.push(`volume name ${v.name} is reserved for the sidecar`);

  // Policy source: the control plane (annotation or injector default) or a ConfigMap.
  const cpAnnotation = get(A.controlPlane);
  const cpAddress = cpAnnotation === 'none' ? null : (cpAnnotation ?? settings.controlPlane);
  const svc = service ?? 'unknown';
  const clientId = get(A.clientId) ?? `${svc}-sidecar`;
  // The sidecar's own OAuth client, when an issuer for it is known.
  const issuer = get(A.clientIssuer) ?? settings.clientIssuer;
  const credentials = issuer === null || issuer === '' ? null : { issuer, clientId };
  const clientSecret = get(A.clientSecret) ?? `ward-client-${svc}`;
  if (credentials === null && (get(A.clientId) !== undefined || get(A.clientSecret) !== undefined)) {
    problems.push(`${A.clientId}/${A.clientSecret}: also set ${A.clientIssuer} (the issuer the client belongs to)`);
  }
  let policy: Parameters<typeof buildSidecarConfig>[0]['policy'] = { kind: 'file' };
  // TLS to the control plane: its CA from a ConfigMap (annotation or injector default; `none`: cleartext).
  const caAnnotation = get(A.controlPlaneCa);
  const cpCa = caAnnotation === 'none' ? null : (caAnnotation ?? settings.controlPlaneCa);
  if (cpCa !== null && !K8S_NAME.test(cpCa)) problems.push(`${A.controlPlaneCa}: '${cpCa}' is not a ConfigMap name`);
  if (cpAddress !== null) {
    if (credentials === null) problems.push(`${A.controlPlane}: the sidecar authenticates to the control plane with its own client: set ${A.clientIssuer} (or the injector's --client-issuer)`);
    else policy = { kind: 'controlPlane', address: cpAddress, issuer: credentials.issuer, ...(cpCa === null ? {} : { caFile: CONTROL_PLANE_CA_FILE }) };
  }

  // The workload's certificate (TLS on the captured port) and the CA for https:// destinations.
  const inboundTlsSecret = get(A.inboundTlsSecret);
  if (inboundTlsSecret !== undefined && !K8S_NAME.test(inboundTlsSecret)) problems.push(`${A.inboundTlsSecret}: '${inboundTlsSecret}' is not a Secret name`);
  const outboundCa = get(A.outboundCa);
  if (outboundCa !== undefined && !K8S_NAME.test(outboundCa)) problems.push(`${A.outboundCa}: '${outboundCa}' is not a ConfigMap name`);
  // The API server does not check the names a volume refers to: a bad one would be admitted and
  // hang in ContainerCreating (found in review), so they are checked here like the others.
  if (credentials !== null && !K8S_NAME.test(clientSecret)) problems.push(`${A.clientSecret}: '${clientSecret}' is not a Secret name`);
  const policyConfigMap = get(A.policyConfigMap) ?? `ward-policy-${svc}`;
  const policyKey = get(A.policyKey) ?? 'policy.yaml';
  if (policy.kind === 'file') {
    if (!K8S_NAME.test(policyConfigMap)) problems.push(`${A.policyConfigMap}: '${policyConfigMap}' is not a ConfigMap name`);
    if (!CONFIG_KEY.test(policyKey)) problems.push(`${A.policyKey}: '${policyKey}' is not a ConfigMap key`);
  }

  let configYaml = '';
  if (problems.length === 0) {
    configYaml = attempt(
      () =>
        buildSidecarConfig({
          service: svc,
          inboundPort: settings.inboundPort,
          adminPort: settings.adminPort,
          outboundPort,
          appPort: app.port,
          appProtocol: app.protocol,
          policy,
          credentials,
          drainSeconds,
          logLevel,
          inboundTls: inboundTlsSecret !== undefined,
          overrides: annotations[A.sidecarConfig],
        }),
      '',
    );
  }
  const capture: CaptureOptions = {
    inboundPort: settings.inboundPort,
    outboundPort,
    proxyUid: settings.proxyUid,
    proxyGid: settings.proxyGid,
    inboundPorts,
    excludeInboundPorts: [...new Set([settings.adminPort, ...excludeInbound])].sort((a, b) => a - b),
    excludeOutboundPorts: [...new Set([...settings.excludeOutboundPorts, ...excludeOutboundPorts])].sort((a, b) => a - b),
    excludeOutboundCidrs,
  };
  problems.push(...validateCaptureOptions(capture));
  // The app port is the one port the sidecar guards: left out of capture (excluded, or not in a
  // list that probably has a typo), callers reach the app on it directly, with no token, in a pod
  // marked injected (found in review). Its own port is refused above.
  if (!sidecarPorts.has(app.port)) {
    if (excludeInbound.includes(app.port)) {
      problems.push(`${A.excludeInboundPorts}: ${app.port} is the app port (${A.appPort}); excluded from capture, callers would reach the app on it without the sidecar`);
    }
    if (inboundPorts !== '*' && inboundPorts.length > 0 && !inboundPorts.includes(app.port)) {
      problems.push(`${A.inboundPorts}: '${inboundRaw}' does not list the app port ${app.port} (${A.appPort}); callers would reach the app on it without the sidecar`);
    }
  }
  if (problems.length > 0) return { kind: 'refused', problems };
  warnings.push(...probeWarnings(spec.containers, capture, app.port, requiresTls(configYaml)));

  // 3. Build the new pod.
  const withCa = policy.kind === 'controlPlane' && policy.caFile !== undefined;
  const sidecar = sidecarContainer(settings, {
    configYaml,
    resources,
    native,
    drainSeconds,
    policyFromFile: policy.kind === 'file',
    clientSecret: credentials !== null,
    controlPlaneCa: withCa,
    inboundTls: inboundTlsSecret !== undefined,
    outboundCa: outboundCa !== undefined,
  });
  const init = initContainer(settings, capture);
  const volumes: IVolume[] = [
    { name: VOLUMES.run, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
    { name: VOLUMES.initRun, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
  ];
  if (policy.kind === 'file') {
    volumes.push({ name: VOLUMES.policy, configMap: { name: policyConfigMap, items: [{ key: policyKey, path: 'policy.yaml' }] } });
  } else {
    volumes.push({ name: VOLUMES.state, emptyDir: {} });
  }
  if (credentials !== null) {
    volumes.push({ name: VOLUMES.client, secret: { secretName: clientSecret, items: [{ key: 'client-secret', path: 'client-secret' }], defaultMode: SECRET_FILE_MODE } });
  }
  if (withCa && cpCa !== null) volumes.push({ name: VOLUMES.controlPlaneCa, configMap: { name: cpCa, items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
  if (inboundTlsSecret !== undefined) {
    volumes.push({
      name: VOLUMES.inboundTls,
      secret: { secretName: inboundTlsSecret, items: [{ key: 'tls.crt', path: 'tls.crt' }, { key: 'tls.key', path: 'tls.key' }], defaultMode: SECRET_FILE_MODE },
    });
  }
  if (outboundCa !== undefined) volumes.push({ name: VOLUMES.outboundCa, configMap: { name: outboundCa, items: [{ key: 'ca.crt', path: 'ca.crt' }] } });

  const newSpec: IPodSpec = { ...spec };
  // Capture first, then (native) the sidecar, then the app's own init containers: those run
  // with capture on, so their calls need the sidecar already listening.
  newSpec.initContainers = native ? [init, sidecar, ...(spec.initContainers ?? [])] : [init, ...(spec.initContainers ?? [])];
  newSpec.containers = native ? [...spec.containers] : [sidecar, ...spec.containers];
  newSpec.volumes = [...(spec.volumes ?? []), ...volumes];
  const grace = drainSeconds + (native ? 0 : settings.preStopSeconds) + 5;
  newSpec.terminationGracePeriodSeconds = Math.max(spec.terminationGracePeriodSeconds ?? 30, grace);

  const newAnnotations: Record<string, string> = { ...annotations, [A.status]: 'injected' };
  const firstApp = spec.containers[0]?.name;
  if (!native && firstApp !== undefined && newAnnotations['kubectl.kubernetes.io/default-container'] === undefined) {
    // kubectl logs/exec default to the app, not to the sidecar that now comes first.
    newAnnotations['kubectl.kubernetes.io/default-container'] = firstApp;
  }
  const newMeta: PodMeta = { ...meta, annotations: newAnnotations };
  return { kind: 'injected', template: { metadata: newMeta, spec: newSpec }, service: svc, warnings };
}

export function isInjected(t: PodTemplate): boolean {
  if (t.metadata?.annotations?.[A.status] !== undefined) return true;
  return [...(t.spec.initContainers ?? []), ...(t.spec.containers ?? [])].some((c) => c.name === SIDECAR_NAME || c.name === INIT_NAME);
}

/** The owner reference marked `controller: true`, if well-formed. */
function controllerOf(meta: PodMeta): { readonly kind: string; readonly name: string } | undefined {
  const refs = meta['ownerReferences'];
  if (!Array.isArray(refs)) return undefined;
  for (const r of refs as unknown[]) {
    if (r === null || typeof r !== 'object') continue;
    const { kind, name, controller } = r as Record<string, unknown>;
    if (controller === true && typeof kind === 'string' && typeof name === 'string' && name !== '') return { kind, name };
  }
  return undefined;
}

/**
 * The CronJob of a Job it created: the CronJob controller names each run `<cronjob>-<scheduled
 * time in minutes since the epoch>`, eight digits from 1970's 25 000 000th minute (2017) on. A
 * Job named so by hand would be taken for a CronJob's run; a date (`report-20261127`, below that
 * range) is not.
 */
function cronJobOf(job: string): string | undefined {
  const m = /^(.+)-(\d{8})$/.exec(job);
  if (m === null || Number(m[2]) < 25_000_000) return undefined;
  return m[1];
}

function serviceName(meta: PodMeta, ctx: InjectContext, annotated: string | undefined): string | null {
  if (annotated !== undefined && annotated !== '') return annotated;
  const labels = meta.labels ?? {};
  const fromLabel = labels['app.kubernetes.io/name'] ?? labels['app'];
  if (fromLabel !== undefined && fromLabel !== '') return fromLabel;
  if (ctx.workloadName !== undefined) return ctx.workloadName;
  // A pod a controller created is named after it per replica or per run (`web-0`, `reindex-2-`,
  // `nightly-28473920-`): the service is the workload's, as `ward inject` names it from the
  // manifest (found in review: the webhook used the pod's own name).
  const owner = controllerOf(meta);
  if (owner !== undefined && (owner.kind === 'StatefulSet' || owner.kind === 'DaemonSet')) return owner.name;
  if (owner !== undefined && owner.kind === 'ReplicaSet') {
    const hash = labels['pod-template-hash'];
    return hash !== undefined && owner.name.endsWith(`-${hash}`) ? owner.name.slice(0, -hash.length - 1) : owner.name;
  }
  // A Job's pods: the controller sets the owner and the job-name labels (a pod of its own may
  // carry a `job-name` label for other reasons, and is not a Job's).
  if (owner !== undefined && owner.kind === 'Job') {
    const job = labels['batch.kubernetes.io/job-name'] ?? labels['job-name'] ?? owner.name;
    return cronJobOf(job) ?? job;
  }
  if (meta.name !== undefined && meta.name !== '') return meta.name;
  // A pod created by a ReplicaSet: generateName is `<deployment>-<pod-template-hash>-`.
  const gen = meta.generateName;
  if (gen !== undefined && gen !== '') {
    const hash = labels['pod-template-hash'];
    const trimmed = gen.replace(/-$/, '');
    if (hash !== undefined && trimmed.endsWith(`-${hash}`)) return trimmed.slice(0, -hash.length - 1);
    return trimmed;
  }
  return null;
}

/**
 * Kubelet probes come from outside the pod, so a probe on a captured port reaches the sidecar:
 * an HTTP probe needs a policy rule that lets it through (`token: optional`), a TCP probe only
 * checks that the sidecar accepts connections.
 */
function probeWarnings(containers: readonly IContainer[], capture: CaptureOptions, appPort: number, strictTls: boolean): string[] {
  const out: string[] = [];
  for (const c of containers) {
    for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe'] as const) {
      const probe = c[kind];
      if (probe === undefined) continue;
      const target = probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port;
      if (target === undefined) continue;
      const port = typeof target === 'number' ? target : (c.ports ?? []).find((p) => p.name === target)?.containerPort ?? Number(target);
      const captured = !capture.excludeInboundPorts.includes(port) && (capture.inboundPorts === '*' || capture.inboundPorts.includes(port));
      if (!captured) continue;
      if (probe.httpGet !== undefined) {
        out.push(`container ${c.name}: the ${kind} (HTTP GET ${probe.httpGet.path ?? '/'} on port ${port}) goes through the sidecar: the policy must allow it without a token (token: optional)`);
        if (strictTls && probe.httpGet.scheme !== 'HTTPS') out.push(`container ${c.name}: the ${kind} is cleartext and inbound.tls.mode is strict: the sidecar will refuse it; set scheme: HTTPS`);
      } else if (probe.tcpSocket !== undefined) out.push(`container ${c.name}: the ${kind} (TCP on port ${port}) reaches the sidecar, not the app`);
      else {
        out.push(`container ${c.name}: the ${kind} (gRPC on port ${port}) goes through the sidecar: the policy must allow grpc.health.v1.Health/Check without a token`);
        // The app port cannot be excluded (that would open the app to anyone): the check needs a
        // port of its own, or to run inside the container.
        const fix =
          port === appPort
            ? `port ${port} is the app port, which cannot be excluded from capture: serve the health service on a port of its own and exclude that one (${A.excludeInboundPorts}), or use an exec probe`
            : `exclude port ${port} from capture (${A.excludeInboundPorts}) if it serves nothing else`;
        if (strictTls) out.push(`container ${c.name}: the ${kind} speaks no TLS and inbound.tls.mode is strict: the sidecar will refuse it; ${fix}`);
      }
    }
  }
  return out;
}

function appPort(
  containers: readonly IContainer[],
  annotatedPort: string | undefined,
  annotatedProtocol: string | undefined,
  problems: string[],
): { port: number; protocol: 'h2c' | 'http1' } {
  const declared = containers.flatMap((c) => (c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP'));
  let port = declared[0]?.containerPort ?? 8080;
  if (annotatedPort !== undefined) {
    if (/^\d{1,5}$/.test(annotatedPort) && Number(annotatedPort) >= 1 && Number(annotatedPort) <= 65535) port = Number(annotatedPort);
    else problems.push(`${A.appPort}: '${annotatedPort}' is not a TCP port (1-65535)`);
  }
  if (annotatedProtocol !== undefined) {
    if (annotatedProtocol === 'h2c' || annotatedProtocol === 'http1') return { port, protocol: annotatedProtocol };
    problems.push(`${A.appProtocol}: '${annotatedProtocol}' is not h2c or http1`);
  }
  const name = declared.find((p) => p.containerPort === port)?.name ?? '';
  return { port, protocol: /^(grpc|h2c|http2)/.test(name) ? 'h2c' : 'http1' };
}

function sidecarContainer(
  s: InjectorSettings,
  o: {
    configYaml: string;
    resources: { requests: Record<string, string>; limits: Record<string, string> };
    native: boolean;
    drainSeconds: number;
    policyFromFile: boolean;
    clientSecret: boolean;
    controlPlaneCa: boolean;
    inboundTls: boolean;
    outboundCa: boolean;
  },
): IContainer {
  const mounts: NonNullable<IContainer['volumeMounts']> = [{ name: VOLUMES.run, mountPath: '/var/run/ward' }];
  if (o.policyFromFile) mounts.push({ name: VOLUMES.policy, mountPath: POLICY_DIR, readOnly: true });
  else mounts.push({ name: VOLUMES.state, mountPath: STATE_DIR });
  if (o.clientSecret) mounts.push({ name: VOLUMES.client, mountPath: CLIENT_DIR, readOnly: true });
  if (o.controlPlaneCa) mounts.push({ name: VOLUMES.controlPlaneCa, mountPath: CONTROL_PLANE_CA_DIR, readOnly: true });
  if (o.inboundTls) mounts.push({ name: VOLUMES.inboundTls, mountPath: INBOUND_TLS_DIR, readOnly: true });
  if (o.outboundCa) mounts.push({ name: VOLUMES.outboundCa, mountPath: OUTBOUND_CA_DIR, readOnly: true });
  const probe = (path: string, period: number, failures: number): NonNullable<IContainer['readinessProbe']> => ({
    httpGet: { path, port: s.adminPort },
    periodSeconds: period,
    failureThreshold: failures,
    timeoutSeconds: 2,
  });
  const c: IContainer = {
    name: SIDECAR_NAME,
    image: s.image,
    imagePullPolicy: s.imagePullPolicy,
    // `ward sidecar` reads a file; the config travels in the pod spec (env) and is written to an
    // in-memory emptyDir first. `exec` keeps node as the process that receives SIGTERM.
    command: ['/bin/sh', '-c', `printf '%s\\n' "$WARD_SIDECAR_CONFIG" > ${CONFIG_PATH} && exec node ${WARD_BIN} sidecar --config ${CONFIG_PATH}`],
    env: [
      // The kubelet expands `$(VAR)` in env values and turns `$$` into `$`: every `$` doubled, the
      // sidecar gets the config as written (found in review: `$(HOME)` in a value was replaced).
      { name: 'WARD_SIDECAR_CONFIG', value: o.configYaml.replaceAll('$', '$$$$') },
      ...(s.nodeOptions === '' ? [] : [{ name: 'NODE_OPTIONS', value: s.nodeOptions }]),
    ],
    ports: [{ name: 'ward-admin', containerPort: s.adminPort, protocol: 'TCP' }],
    // startup: listeners are bound before the admin port answers; in native mode this also
    // holds the app's containers back until the sidecar is there to take their traffic.
    startupProbe: probe('/healthz', 1, 120),
    readinessProbe: probe('/readyz', 2, 3),
    livenessProbe: probe('/healthz', 10, 3),
    resources: o.resources,
    securityContext: {
      runAsUser: s.proxyUid,
      runAsGroup: s.proxyGid,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: mounts,
  };
  if (o.native) {
    // Native sidecar: started before the app, stopped after it, never blocks a Job's completion.
    c.restartPolicy = 'Always';
  } else {
    // Both containers get SIGTERM at once: keep accepting while endpoints drop the pod, then drain.
    c.lifecycle = { preStop: { exec: { command: ['sleep', String(s.preStopSeconds)] } } };
  }
  return c;
}

function initContainer(s: InjectorSettings, o: CaptureOptions): IContainer {
  const args = [
    'capture',
    '--inbound-port', String(o.inboundPort),
    ...(o.outboundPort === null ? ['--no-outbound'] : ['--outbound-port', String(o.outboundPort)]),
    '--proxy-uid', String(o.proxyUid),
    '--proxy-gid', String(o.proxyGid),
    '--inbound-ports', o.inboundPorts === '*' ? '*' : o.inboundPorts.join(','),
  ];
  const list = (flag: string, items: readonly (number | string)[]): void => {
    if (items.length > 0) args.push(flag, items.join(','));
  };
  list('--exclude-inbound-ports', o.excludeInboundPorts);
  if (o.outboundPort !== null) {
    list('--exclude-outbound-ports', o.excludeOutboundPorts);
    list('--exclude-outbound-cidrs', o.excludeOutboundCidrs);
  }
  return {
    name: INIT_NAME,
    image: s.image,
    imagePullPolicy: s.imagePullPolicy,
    command: ['node', WARD_BIN],
    args,
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
    securityContext: {
      // iptables needs root with NET_ADMIN (rules) and NET_RAW (iptables' raw socket); nothing else.
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    // iptables takes its lock under /run.
    volumeMounts: [{ name: VOLUMES.initRun, mountPath: '/run' }],
  };
}
