import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseSidecarConfig } from '../../../src/config/sidecar.ts';
import { injectPod, type InjectOutcome, type PodTemplate } from '../../../src/inject/pod.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';
import { chartObjects, pod, podTemplateOf, validatePod } from './helpers.ts';

const settings = defaultSettings({ image: 'registry.example/ward:0.1.0' });
const enrolled = { namespaceEnabled: true };

function injected(o: InjectOutcome): PodTemplate {
  if (o.kind !== 'injected') throw new Error(`expected injection, got ${o.kind}: ${o.kind === 'refused' ? o.problems.join('; ') : o.reason}`);
  return o.template;
}

function sidecarOf(t: PodTemplate) {
  const c = [...(t.spec.initContainers ?? []), ...t.spec.containers].find((x) => x.name === 'ward-sidecar');
  if (c === undefined) throw new Error('no sidecar');
  return c;
}

/** An env value as the kubelet hands it over: `$$` is `$`, `$(NAME)` of a defined variable is its value (none is defined here). */
function kubeletExpand(v: string): string {
  return v.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m) => (m === '$$' ? '$' : m));
}

function configOf(t: PodTemplate): Record<string, unknown> {
  const raw = sidecarOf(t).env?.find((e) => e.name === 'WARD_SIDECAR_CONFIG')?.value;
  if (raw === undefined) throw new Error('no config');
  const yaml = kubeletExpand(raw);
  parseSidecarConfig(yaml, 'injected'); // what the sidecar itself would do at start-up
  return parse(yaml) as Record<string, unknown>;
}

function initArgs(t: PodTemplate): string[] {
  return t.spec.initContainers?.find((c) => c.name === 'ward-init')?.args ?? [];
}

describe('injectPod: who is injected', () => {
  it('injects only opted-in pods: namespace label, pod annotation or pod label', () => {
    expect(injectPod(pod(), { namespaceEnabled: false }, settings)).toEqual({ kind: 'skipped', reason: 'not opted in' });
    expect(injectPod(pod(), enrolled, settings).kind).toBe('injected');
    expect(injectPod(pod({ annotations: { 'ward.dev/inject': 'enabled' } }), { namespaceEnabled: false }, settings).kind).toBe('injected');
    expect(injectPod(pod({ labels: { 'ward.dev/inject': 'true' } }), { namespaceEnabled: false }, settings).kind).toBe('injected');
  });

  it('leaves opted-out, host-network and other-mesh pods exactly alone', () => {
    expect(injectPod(pod({ annotations: { 'ward.dev/inject': 'disabled' } }), enrolled, settings)).toEqual({ kind: 'skipped', reason: 'opted out' });
    expect(injectPod(pod({ labels: { 'ward.dev/inject': 'false' } }), enrolled, settings)).toEqual({ kind: 'skipped', reason: 'opted out' });
    expect(injectPod(pod({ spec: { hostNetwork: true } }), enrolled, settings)).toMatchObject({ kind: 'skipped', reason: expect.stringContaining('hostNetwork') });
    const istio = pod();
    istio.spec.containers.push({ name: 'istio-proxy', image: 'istio/proxyv2' });
    expect(injectPod(istio, enrolled, settings)).toMatchObject({ kind: 'skipped', reason: expect.stringContaining('istio-proxy') });
  });

  it('is idempotent: an injected pod is skipped, whatever else it says', () => {
    const once = injected(injectPod(pod(), enrolled, settings));
    expect(injectPod(once, enrolled, settings)).toEqual({ kind: 'skipped', reason: 'already injected' });
    // even if someone strips the status annotation, the containers give it away
    const stripped = { ...once, metadata: { ...once.metadata, annotations: {} } };
    expect(injectPod(stripped, enrolled, settings)).toEqual({ kind: 'skipped', reason: 'already injected' });
  });

  it('does not modify its input', () => {
    const input = pod();
    const copy = structuredClone(input);
    injectPod(input, enrolled, settings);
    expect(input).toEqual(copy);
  });
});

describe('injectPod: the injected pod', () => {
  it('adds a hardened native sidecar and a capture init container, and passes the API schema', () => {
    const t = injected(injectPod(pod(), enrolled, settings));
    validatePod(t);
    expect(t.spec.initContainers?.map((c) => c.name)).toEqual(['ward-init', 'ward-sidecar']);
    expect(t.spec.containers.map((c) => c.name)).toEqual(['app']);
    expect(t.metadata?.annotations?.['ward.dev/status']).toBe('injected');

    const s = sidecarOf(t);
    expect(s.restartPolicy).toBe('Always');
    expect(s.image).toBe('registry.example/ward:0.1.0');
    expect(s.securityContext).toMatchObject({
      runAsUser: 1337,
      runAsGroup: 1337,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(s.securityContext?.capabilities?.add).toBeUndefined();
    expect(s.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 15000 });
    expect(s.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 15000 });
    expect(s.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 15000 });
    expect(s.resources).toEqual({ requests: { cpu: '50m', memory: '128Mi' }, limits: { cpu: '1', memory: '256Mi' } });
    // V8's heap sized for a sidecar (docs/performance.md), whatever the node's memory
    expect(s.env?.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe('--max-semi-space-size=1 --max-old-space-size=2047');

    const init = t.spec.initContainers?.[0];
    expect(init?.securityContext).toMatchObject({ runAsUser: 0, runAsNonRoot: false, allowPrivilegeEscalation: false, privileged: false, capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] } });
    expect(init?.command).toEqual(['node', '/app/bin/ward.js']);
    expect(initArgs(t)).toEqual(['capture', '--inbound-port', '15006', '--outbound-port', '15001', '--proxy-uid', '1337', '--proxy-gid', '1337', '--inbound-ports', '*', '--exclude-inbound-ports', '15000', '--exclude-outbound-ports', '53']);
  });

  it('sets the sidecar\'s NODE_OPTIONS from the injector settings, or none', () => {
    const nodeOptions = (o: string): string | undefined =>
      sidecarOf(injected(injectPod(pod(), enrolled, defaultSettings({ nodeOptions: o })))).env?.find((e) => e.name === 'NODE_OPTIONS')?.value;
    expect(nodeOptions('--max-semi-space-size=2')).toBe('--max-semi-space-size=2');
    expect(nodeOptions('')).toBeUndefined();
  });

  it('generates a sidecar config the sidecar accepts: upstream, listeners, policy ConfigMap', () => {
    const t = injected(injectPod(pod(), enrolled, settings));
    expect(configOf(t)).toEqual({
      service: 'orders',
      inbound: { listen: { host: '0.0.0.0', port: 15006 } },
      upstream: { url: 'http://127.0.0.1:8080', protocol: 'http1' },
      admin: { host: '0.0.0.0', port: 15000 },
      policy: { file: '/etc/ward/policy/policy.yaml' },
      outbound: { listen: { host: '127.0.0.1', port: 15001 } },
      drainTimeoutMs: 10000,
      logLevel: 'info',
    });
    expect(t.spec.volumes).toContainEqual({ name: 'ward-policy', configMap: { name: 'ward-policy-orders', items: [{ key: 'policy.yaml', path: 'policy.yaml' }] } });
    expect(sidecarOf(t).volumeMounts).toContainEqual({ name: 'ward-policy', mountPath: '/etc/ward/policy', readOnly: true });
  });

  it('legacy mode: a regular first container that sleeps in preStop, grace period raised, kubectl defaults to the app', () => {
    const t = injected(injectPod(pod({ annotations: { 'ward.dev/native-sidecar': 'false', 'ward.dev/drain-seconds': '20' } }), enrolled, settings));
    validatePod(t);
    expect(t.spec.containers.map((c) => c.name)).toEqual(['ward-sidecar', 'app']);
    expect(t.spec.initContainers?.map((c) => c.name)).toEqual(['ward-init']);
    expect(sidecarOf(t).restartPolicy).toBeUndefined();
    expect(sidecarOf(t).lifecycle?.preStop?.exec?.command).toEqual(['sleep', '5']);
    expect(t.spec.terminationGracePeriodSeconds).toBe(30); // 20 drain + 5 preStop + 5 margin
    expect(configOf(t)['drainTimeoutMs']).toBe(20_000);
    expect(t.metadata?.annotations?.['kubectl.kubernetes.io/default-container']).toBe('app');
  });

  it('the app\'s own init containers run after capture and the sidecar (their calls are captured too)', () => {
    const p = pod({ spec: { initContainers: [{ name: 'migrate', image: 'm' }] } });
    expect(injected(injectPod(p, enrolled, settings)).spec.initContainers?.map((c) => c.name)).toEqual(['ward-init', 'ward-sidecar', 'migrate']);
  });

  it('honours per-pod annotations', () => {
    const t = injected(
      injectPod(
        pod({
          annotations: {
            'ward.dev/service': 'billing',
            'ward.dev/app-port': '9090',
            'ward.dev/app-protocol': 'h2c',
            'ward.dev/inbound-ports': '9090, 8080',
            'ward.dev/exclude-inbound-ports': '9464',
            'ward.dev/exclude-outbound-ports': '5432',
            'ward.dev/exclude-outbound-cidrs': '10.96.0.0/12,fd00::/8',
            'ward.dev/proxy-cpu': '200m',
            'ward.dev/proxy-memory-limit': '1Gi',
            'ward.dev/policy-configmap': 'billing-policies',
            'ward.dev/policy-key': 'billing.yaml',
            'ward.dev/log-level': 'debug',
            'ward.dev/sidecar-config': 'identityHeaders: { stripAuthorization: true }\ndrainTimeoutMs: 1500\n',
          },
        }),
        enrolled,
        settings,
      ),
    );
    validatePod(t);
    const cfg = configOf(t);
    expect(cfg).toMatchObject({ service: 'billing', upstream: { url: 'http://127.0.0.1:9090', protocol: 'h2c' }, logLevel: 'debug', drainTimeoutMs: 1500, identityHeaders: { stripAuthorization: true } });
    expect(initArgs(t)).toEqual(expect.arrayContaining(['--inbound-ports', '8080,9090', '--exclude-inbound-ports', '9464,15000', '--exclude-outbound-ports', '53,5432', '--exclude-outbound-cidrs', '10.96.0.0/12,fd00::/8']));
    expect(sidecarOf(t).resources).toEqual({ requests: { cpu: '200m', memory: '128Mi' }, limits: { cpu: '1', memory: '1Gi' } });
    expect(t.spec.volumes).toContainEqual({ name: 'ward-policy', configMap: { name: 'billing-policies', items: [{ key: 'billing.yaml', path: 'policy.yaml' }] } });
  });

  it('a `$` in ward.dev/sidecar-config reaches the sidecar as written, past the kubelet\'s $(VAR) expansion (regression)', () => {
    const t = injected(injectPod(pod({ annotations: { 'ward.dev/sidecar-config': 'telemetry: { headers: { x-api-key: "a$(HOME)$$b" } }' } }), enrolled, settings));
    const raw = sidecarOf(t).env?.find((e) => e.name === 'WARD_SIDECAR_CONFIG')?.value ?? '';
    expect(raw).toContain('a$$(HOME)$$$$b');
    expect(configOf(t)).toMatchObject({ telemetry: { headers: { 'x-api-key': 'a$(HOME)$$b' } } });
  });

  it('infers h2c for gRPC ports and the service from labels or ReplicaSet names', () => {
    const grpc = pod();
    grpc.spec.containers[0]!.ports = [{ name: 'grpc-api', containerPort: 50051 }];
    expect(configOf(injected(injectPod(grpc, enrolled, settings)))['upstream']).toEqual({ url: 'http://127.0.0.1:50051', protocol: 'h2c' });

    const fromRs: PodTemplate = { metadata: { generateName: 'payments-7d9f8c6b5-', labels: { 'pod-template-hash': '7d9f8c6b5' } }, spec: pod().spec };
    expect(injectPod(fromRs, enrolled, settings)).toMatchObject({ kind: 'injected', service: 'payments' });
    const named = pod({ labels: { 'app.kubernetes.io/name': 'catalog' } });
    expect(injectPod(named, enrolled, settings)).toMatchObject({ kind: 'injected', service: 'catalog' });
    const noPorts = pod();
    delete noPorts.spec.containers[0]!.ports;
    expect(configOf(injected(injectPod(noPorts, enrolled, settings)))['upstream']).toEqual({ url: 'http://127.0.0.1:8080', protocol: 'http1' });
  });

  it('takes policy from the control plane with the sidecar\'s own client', () => {
    const s = defaultSettings({ controlPlane: 'ward-control-plane.ward-system.svc:15010', clientIssuer: 'https://idp.example.com' });
    const t = injected(injectPod(pod(), enrolled, s));
    validatePod(t);
    const cfg = configOf(t);
    expect(cfg['policy']).toEqual({ controlPlane: { address: 'ward-control-plane.ward-system.svc:15010', stateDir: '/var/lib/ward', issuer: 'https://idp.example.com' } });
    expect(cfg['authn']).toEqual({ credentials: [{ issuer: 'https://idp.example.com', clientId: 'orders-sidecar', clientSecretFile: '/etc/ward/client/client-secret' }] });
    expect(t.spec.volumes).toContainEqual({ name: 'ward-client', secret: { secretName: 'ward-client-orders', items: [{ key: 'client-secret', path: 'client-secret' }], defaultMode: 0o444 } });
    expect(t.spec.volumes?.some((v) => v.name === 'ward-policy')).toBe(false);
    // `none` goes back to the ConfigMap for one pod
    expect(configOf(injected(injectPod(pod({ annotations: { 'ward.dev/control-plane': 'none' } }), enrolled, s)))['policy']).toEqual({ file: '/etc/ward/policy/policy.yaml' });
    // TLS to the control plane through the override annotation (a certificate the system roots verify)
    const tls = configOf(injected(injectPod(pod({ annotations: { 'ward.dev/sidecar-config': 'policy: { controlPlane: { tls: {} } }' } }), enrolled, s)));
    expect(tls['policy']).toEqual({ controlPlane: { address: 'ward-control-plane.ward-system.svc:15010', stateDir: '/var/lib/ward', issuer: 'https://idp.example.com', tls: {} } });
    expect(injectPod(pod({ annotations: { 'ward.dev/sidecar-config': 'policy: { controlPlane: { tls: { ca: x } } }' } }), enrolled, s)).toMatchObject({ kind: 'refused' });
    // without an issuer, a control plane cannot be used: refused, not silently ignored
    expect(injectPod(pod({ annotations: { 'ward.dev/control-plane': 'cp:15010' } }), enrolled, settings)).toMatchObject({ kind: 'refused', problems: [expect.stringContaining('ward.dev/client-issuer')] });
  });

  it('TLS to the control plane: the CA ConfigMap is mounted and named in the sidecar config; per pod `none` or another ConfigMap', () => {
    const s = defaultSettings({ controlPlane: 'ward-control-plane.ward-system.svc:15010', clientIssuer: 'https://idp.example.com', controlPlaneCa: 'ward-control-plane-ca' });
    const t = injected(injectPod(pod(), enrolled, s));
    validatePod(t);
    expect(configOf(t)['policy']).toEqual({
      controlPlane: { address: 'ward-control-plane.ward-system.svc:15010', stateDir: '/var/lib/ward', issuer: 'https://idp.example.com', tls: { caFile: '/etc/ward/control-plane-ca/ca.crt' } },
    });
    expect(t.spec.volumes).toContainEqual({ name: 'ward-control-plane-ca', configMap: { name: 'ward-control-plane-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
    expect(sidecarOf(t).volumeMounts).toContainEqual({ name: 'ward-control-plane-ca', mountPath: '/etc/ward/control-plane-ca', readOnly: true });
    // another ConfigMap for one pod
    const other = injected(injectPod(pod({ annotations: { 'ward.dev/control-plane-ca': 'team-ca' } }), enrolled, s));
    expect(other.spec.volumes).toContainEqual({ name: 'ward-control-plane-ca', configMap: { name: 'team-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
    // `none`: cleartext, nothing mounted
    const clear = injected(injectPod(pod({ annotations: { 'ward.dev/control-plane-ca': 'none' } }), enrolled, s));
    expect((configOf(clear)['policy'] as { controlPlane: Record<string, unknown> }).controlPlane['tls']).toBeUndefined();
    expect(clear.spec.volumes?.some((v) => v.name === 'ward-control-plane-ca')).toBe(false);
    // a policy file needs no CA
    const file = injected(injectPod(pod({ annotations: { 'ward.dev/control-plane': 'none' } }), enrolled, s));
    expect(file.spec.volumes?.some((v) => v.name === 'ward-control-plane-ca')).toBe(false);
    // not a ConfigMap name: refused
    expect(injectPod(pod({ annotations: { 'ward.dev/control-plane-ca': 'Bad_Name' } }), enrolled, s)).toMatchObject({ kind: 'refused', problems: [expect.stringContaining('ward.dev/control-plane-ca')] });
  });

  it('TLS between sidecars: the workload certificate is mounted and served on the captured port; the outbound CA is mounted for https:// destinations', () => {
    const t = injected(
      injectPod(
        pod({
          annotations: {
            'ward.dev/inbound-tls-secret': 'orders-tls',
            'ward.dev/outbound-ca': 'ward-mesh-ca',
            'ward.dev/sidecar-config': 'outbound: { destinations: [{ name: payments, url: "https://payments.shop.svc:8080", tls: { caFile: /etc/ward/outbound-ca/ca.crt }, resource: "urn:ward:payments" }] }',
          },
        }),
        enrolled,
        settings,
      ),
    );
    validatePod(t);
    const cfg = configOf(t);
    // no TLS port of its own: the captured port takes TLS and cleartext alike
    expect((cfg['inbound'] as Record<string, unknown>)['tls']).toEqual({ certFile: '/etc/ward/inbound-tls/tls.crt', keyFile: '/etc/ward/inbound-tls/tls.key' });
    expect(t.spec.volumes).toContainEqual({
      name: 'ward-inbound-tls',
      secret: { secretName: 'orders-tls', items: [{ key: 'tls.crt', path: 'tls.crt' }, { key: 'tls.key', path: 'tls.key' }], defaultMode: 0o444 },
    });
    expect(sidecarOf(t).volumeMounts).toContainEqual({ name: 'ward-inbound-tls', mountPath: '/etc/ward/inbound-tls', readOnly: true });
    expect(t.spec.volumes).toContainEqual({ name: 'ward-outbound-ca', configMap: { name: 'ward-mesh-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
    expect(sidecarOf(t).volumeMounts).toContainEqual({ name: 'ward-outbound-ca', mountPath: '/etc/ward/outbound-ca', readOnly: true });
    expect((cfg['outbound'] as { destinations: unknown[] }).destinations).toEqual([
      { name: 'payments', url: 'https://payments.shop.svc:8080', tls: { caFile: '/etc/ward/outbound-ca/ca.crt' }, resource: 'urn:ward:payments' },
    ]);
    // neither without its annotation
    const plain = injected(injectPod(pod(), enrolled, settings));
    expect((configOf(plain)['inbound'] as Record<string, unknown>)['tls']).toBeUndefined();
    expect(plain.spec.volumes?.some((v) => v.name === 'ward-inbound-tls' || v.name === 'ward-outbound-ca')).toBe(false);
    // names that cannot be a Secret or a ConfigMap: refused
    expect(injectPod(pod({ annotations: { 'ward.dev/inbound-tls-secret': 'Orders_TLS' } }), enrolled, settings)).toMatchObject({
      kind: 'refused',
      problems: [expect.stringContaining('ward.dev/inbound-tls-secret')],
    });
    expect(injectPod(pod({ annotations: { 'ward.dev/outbound-ca': '-x' } }), enrolled, settings)).toMatchObject({ kind: 'refused', problems: [expect.stringContaining('ward.dev/outbound-ca')] });
    // the app's own volume names stay its own
    const clash = pod();
    clash.spec.volumes = [{ name: 'ward-inbound-tls', emptyDir: {} }];
    expect(injectPod(clash, enrolled, settings)).toMatchObject({ kind: 'refused', problems: [expect.stringContaining('ward-inbound-tls is reserved')] });
  });

  it('mounts its Secrets so that its own uid can read them: the kubelet writes them root:root without an fsGroup', () => {
    const s = defaultSettings({ controlPlane: 'cp:15010', clientIssuer: 'https://idp.example.com' });
    const t = injected(injectPod(pod({ annotations: { 'ward.dev/inbound-tls-secret': 'orders-tls' } }), enrolled, s));
    expect(t.spec.securityContext?.fsGroup).toBeUndefined();
    const mounted = new Set((sidecarOf(t).volumeMounts ?? []).map((m) => m.name));
    const secrets = (t.spec.volumes ?? []).filter((v) => v.secret !== undefined && mounted.has(v.name));
    expect(secrets.map((v) => v.name).sort()).toEqual(['ward-client', 'ward-inbound-tls']);
    // neither the owner (root) nor the group (root) is the sidecar's: "other" must read
    for (const v of secrets) expect((v.secret!.defaultMode ?? 0o644) & 0o004, v.name).toBe(0o004);
    expect(sidecarOf(t).securityContext).toMatchObject({ runAsUser: 1337, runAsGroup: 1337 });
  });

  it('warns about probes a strict sidecar will refuse: cleartext HTTP GET and gRPC', () => {
    const p = pod({ annotations: { 'ward.dev/inbound-tls-secret': 'orders-tls', 'ward.dev/sidecar-config': 'inbound: { tls: { mode: strict } }' } });
    p.spec.containers[0]!.readinessProbe = { httpGet: { path: '/ready', port: 8080 } };
    p.spec.containers[0]!.livenessProbe = { grpc: { port: 8080 } };
    p.spec.containers[0]!.startupProbe = { httpGet: { path: '/started', port: 8080, scheme: 'HTTPS' } };
    const out = injectPod(p, enrolled, settings);
    if (out.kind !== 'injected') throw new Error(JSON.stringify(out));
    expect(out.warnings.filter((w) => w.includes('strict'))).toEqual([
      'container app: the readinessProbe is cleartext and inbound.tls.mode is strict: the sidecar will refuse it; set scheme: HTTPS',
      // 8080 is the app port: excluding it would take the app out of the sidecar's path (regression: the advice said so)
      'container app: the livenessProbe speaks no TLS and inbound.tls.mode is strict: the sidecar will refuse it; port 8080 is the app port, which cannot be excluded from capture: serve the health service on a port of its own and exclude that one (ward.dev/exclude-inbound-ports), or use an exec probe',
    ]);
    // a gRPC probe on a port of its own may be excluded
    const own = pod({ annotations: { 'ward.dev/inbound-tls-secret': 'orders-tls', 'ward.dev/sidecar-config': 'inbound: { tls: { mode: strict } }' } });
    own.spec.containers[0]!.ports!.push({ name: 'health', containerPort: 8086 });
    own.spec.containers[0]!.livenessProbe = { grpc: { port: 8086 } };
    const ownOut = injectPod(own, enrolled, settings);
    expect(ownOut.kind === 'injected' && ownOut.warnings.filter((w) => w.includes('strict'))).toEqual([
      'container app: the livenessProbe speaks no TLS and inbound.tls.mode is strict: the sidecar will refuse it; exclude port 8086 from capture (ward.dev/exclude-inbound-ports) if it serves nothing else',
    ]);
    // permissive (the default): no such warning
    const q = pod({ annotations: { 'ward.dev/inbound-tls-secret': 'orders-tls' } });
    q.spec.containers[0]!.readinessProbe = { httpGet: { path: '/ready', port: 8080 } };
    const permissive = injectPod(q, enrolled, settings);
    expect(permissive.kind === 'injected' && permissive.warnings.some((w) => w.includes('strict'))).toBe(false);
  });

  it('warns about app probes that now go through the sidecar', () => {
    const p = pod();
    p.spec.containers[0]!.readinessProbe = { httpGet: { path: '/ready', port: 'http' } };
    p.spec.containers[0]!.livenessProbe = { tcpSocket: { port: 8080 } };
    const o = injectPod(p, enrolled, settings);
    expect(o.kind === 'injected' && o.warnings).toEqual([expect.stringContaining('HTTP GET /ready on port 8080'), expect.stringContaining('TCP on port 8080')]);
    // a probe on a port excluded from capture reaches the app: no warning (not the app port: that is refused below)
    const q = pod();
    q.spec.containers[0]!.ports!.push({ name: 'health', containerPort: 8086 });
    q.spec.containers[0]!.readinessProbe = { httpGet: { path: '/ready', port: 'health' } };
    q.spec.containers[0]!.livenessProbe = { tcpSocket: { port: 8086 } };
    const excluded = injectPod({ ...q, metadata: { ...q.metadata, annotations: { 'ward.dev/exclude-inbound-ports': '8086' } } }, enrolled, settings);
    expect(excluded.kind === 'injected' && excluded.warnings).toEqual([]);
  });
});

describe('injectPod: refusals (opted in, but cannot be protected as asked)', () => {
  const refused = (o: InjectOutcome): string => {
    if (o.kind !== 'refused') throw new Error(`expected a refusal, got ${o.kind}`);
    return o.problems.join('\n');
  };

  it.each([
    [{ 'ward.dev/app-port': 'http' }, "ward.dev/app-port: 'http'"],
    [{ 'ward.dev/app-protocol': 'grpc' }, 'ward.dev/app-protocol'],
    [{ 'ward.dev/inbound-ports': '80,x' }, "'x'"],
    [{ 'ward.dev/exclude-outbound-cidrs': '10.0.0.0/40' }, '10.0.0.0/40'],
    [{ 'ward.dev/proxy-memory': 'lots' }, 'ward.dev/proxy-memory'],
    [{ 'ward.dev/drain-seconds': '-1' }, 'ward.dev/drain-seconds'],
    [{ 'ward.dev/capture-outbound': 'maybe' }, 'ward.dev/capture-outbound'],
    [{ 'ward.dev/exclude-inbound-port': '9090' }, 'unknown annotation ward.dev/exclude-inbound-port'],
    [{ 'ward.dev/service': 'Orders_API' }, 'not a valid service name'],
    [{ 'ward.dev/app-port': '15001' }, "the sidecar's own ports"],
    [{ 'ward.dev/inject': 'yes' }, "'yes'"],
    [{ 'ward.dev/sidecar-config': 'upstream: { protocol: smtp }' }, 'upstream.protocol'],
    [{ 'ward.dev/sidecar-config': '[1, 2]' }, 'must be a YAML mapping'],
    // what capture and the probes are built from stays the injector's (regression: the app's real
    // port left uncaptured, the egress listener open to the network, a pod never ready)
    [{ 'ward.dev/sidecar-config': 'upstream: { url: "http://127.0.0.1:3000" }', 'ward.dev/exclude-inbound-ports': '3000' }, 'upstream.url must stay on loopback port 8080'],
    [{ 'ward.dev/sidecar-config': 'upstream: { url: "http://127.0.0.1:8080" }', 'ward.dev/app-port': '9090', 'ward.dev/inbound-ports': '9090' }, 'upstream.url must stay on loopback port 9090'],
    [{ 'ward.dev/sidecar-config': 'upstream: { url: "http://10.0.0.7:8080" }' }, 'upstream.url must stay on loopback'],
    [{ 'ward.dev/sidecar-config': 'outbound: { listen: { host: "0.0.0.0" } }', 'ward.dev/inbound-ports': '8080' }, 'outbound.listen must stay 127.0.0.1:15001'],
    [{ 'ward.dev/sidecar-config': 'outbound: { listen: { host: "0.0.0.0", port: 15001 } }', 'ward.dev/capture-outbound': 'false' }, 'outbound.listen.host must be a loopback address'],
    [{ 'ward.dev/sidecar-config': 'inbound: { listen: { port: 15007 } }' }, 'inbound.listen.port'],
    [{ 'ward.dev/sidecar-config': 'admin: { port: 15020 }' }, 'admin.port'],
    // the API server refuses a request above its limit (regression: admitted, then refused there)
    [{ 'ward.dev/proxy-cpu': '2' }, 'the cpu request 2 is above the limit'],
    [{ 'ward.dev/proxy-memory': '512Mi' }, 'the memory request 512Mi is above the limit 256Mi'],
    [{ 'ward.dev/proxy-memory-limit': '64Mi' }, 'the memory request 128Mi is above the limit 64Mi'],
    [{ 'ward.dev/proxy-cpu-limit': '0' }, 'is above the limit 0'],
    // names the API server takes without checking, then cannot mount (regression: admitted, then stuck in ContainerCreating)
    [{ 'ward.dev/policy-configmap': 'Orders_Policy' }, "ward.dev/policy-configmap: 'Orders_Policy' is not a ConfigMap name"],
    [{ 'ward.dev/policy-key': 'a/b c' }, "ward.dev/policy-key: 'a/b c' is not a ConfigMap key"],
  ])('%j', (annotations, message) => {
    expect(refused(injectPod(pod({ annotations }), enrolled, settings))).toContain(message);
  });

  it('an override that keeps the app on its port, or a request equal to its limit, is fine', () => {
    const t = injected(injectPod(pod({ annotations: { 'ward.dev/sidecar-config': 'upstream: { url: "http://localhost:8080", maxRequests: 10 }', 'ward.dev/proxy-memory': '256Mi', 'ward.dev/proxy-cpu': '1000m' } }), enrolled, settings));
    expect((configOf(t)['upstream'] as Record<string, unknown>)['maxRequests']).toBe(10);
  });

  it('refuses a client Secret name that is not one (regression)', () => {
    const withClient = defaultSettings({ image: 'registry.example/ward:0.1.0', clientIssuer: 'https://idp.example.com' });
    expect(refused(injectPod(pod({ annotations: { 'ward.dev/client-secret': 'Orders Secret' } }), enrolled, withClient))).toContain("ward.dev/client-secret: 'Orders Secret' is not a Secret name");
  });

  it('refuses an app running as the sidecar\'s uid (its traffic would bypass capture)', () => {
    expect(refused(injectPod(pod({ spec: { securityContext: { runAsUser: 1337 } } }), enrolled, settings))).toContain('uid 1337');
    const c = pod();
    c.spec.containers[0]!.securityContext = { runAsGroup: 1337 };
    expect(refused(injectPod(c, enrolled, settings))).toContain('gid 1337');
  });

  it.each([
    ['fsGroup', { fsGroup: 1337 }, "the pod's fsGroup is 1337"],
    ['supplementalGroups', { supplementalGroups: [4000, 1337] }, "the pod's supplementalGroups include 1337"],
  ])('refuses the sidecar\'s gid as the app\'s %s (regression: a setgid-1337 file of the app bypassed capture)', (_name, sc, message) => {
    expect(refused(injectPod(pod({ spec: { securityContext: { runAsUser: 1000, runAsGroup: 1000, ...sc } } }), enrolled, settings))).toContain(message);
    // other groups are fine
    expect(injectPod(pod({ spec: { securityContext: { runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000, supplementalGroups: [3000] } } }), enrolled, settings).kind).toBe('injected');
  });

  it('refuses leaving the app port out of capture (regression: the app was reachable on it without a token)', () => {
    expect(refused(injectPod(pod({ annotations: { 'ward.dev/exclude-inbound-ports': '9464,8080' } }), enrolled, settings))).toBe(
      'ward.dev/exclude-inbound-ports: 8080 is the app port (ward.dev/app-port); excluded from capture, callers would reach the app on it without the sidecar',
    );
    // a typo in the list of captured ports
    expect(refused(injectPod(pod({ annotations: { 'ward.dev/inbound-ports': '8008' } }), enrolled, settings))).toBe(
      "ward.dev/inbound-ports: '8008' does not list the app port 8080 (ward.dev/app-port); callers would reach the app on it without the sidecar",
    );
    expect(refused(injectPod(pod({ annotations: { 'ward.dev/app-port': '9090', 'ward.dev/inbound-ports': '8080' } }), enrolled, settings))).toContain('does not list the app port 9090');
    // listed, or every port: injected
    expect(injectPod(pod({ annotations: { 'ward.dev/inbound-ports': '8080' } }), enrolled, settings).kind).toBe('injected');
    expect(injectPod(pod({ annotations: { 'ward.dev/exclude-inbound-ports': '9464' } }), enrolled, settings).kind).toBe('injected');
  });

  it('refuses an injector whose proxy gid is 0 (regression: every gid-0 app process escaped capture)', () => {
    const o = injectPod(pod({ spec: { securityContext: { runAsUser: 1000 } } }), enrolled, defaultSettings({ proxyGid: 0 }));
    expect(refused(o)).toContain('proxy gid: 0');
  });

  it('refuses port and volume clashes with the sidecar', () => {
    const p = pod();
    p.spec.containers[0]!.ports = [{ containerPort: 15000 }];
    expect(refused(injectPod(p, enrolled, settings))).toContain('port 15000');
    expect(refused(injectPod(pod({ spec: { volumes: [{ name: 'ward-run', emptyDir: {} }] } }), enrolled, settings))).toContain('ward-run');
  });

  it('reports every problem at once', () => {
    const o = injectPod(pod({ annotations: { 'ward.dev/app-port': 'x', 'ward.dev/proxy-cpu': 'y' } }), enrolled, settings);
    expect(o.kind === 'refused' && o.problems).toHaveLength(2);
  });
});

describe('injectPod on pod specs from common charts', () => {
  it('injects the enrolled workloads, skips the rest, and every result passes the API schema', () => {
    const results = chartObjects()
      .filter((o) => o.kind !== 'Namespace' && o.kind !== 'Service')
      .map((o) => [`${o.kind}/${o.metadata.name}`, injectPod(podTemplateOf(o), { namespaceEnabled: o.metadata.namespace === 'shop', workloadName: o.metadata.name }, settings)] as const);
    expect(Object.fromEntries(results.map(([k, o]) => [k, o.kind === 'skipped' ? o.reason : o.kind]))).toEqual({
      'Deployment/web': 'injected',
      'StatefulSet/redis-master': 'opted out',
      'DaemonSet/node-exporter': expect.stringContaining('hostNetwork'),
      'Deployment/orders': 'injected',
      'Job/report': 'injected',
      'CronJob/cleanup': 'injected',
      'Pod/debug': 'injected',
    });
    for (const [, o] of results) if (o.kind === 'injected') validatePod(o.template);

    const orders = results.find(([k]) => k === 'Deployment/orders')![1];
    const t = injected(orders);
    expect(t.spec.terminationGracePeriodSeconds).toBe(35); // drain 30 s + 5
    expect(configOf(t)['upstream']).toEqual({ url: 'http://127.0.0.1:50051', protocol: 'h2c' });
    expect(sidecarOf(t).resources?.limits).toEqual({ cpu: '1', memory: '512Mi' });
    // the bitnami-style pod keeps its own (restricted) security context and volumes
    const web = injected(results[0]![1]);
    expect(web.spec.securityContext).toEqual({ fsGroup: 1001, seccompProfile: { type: 'RuntimeDefault' } });
    expect(web.spec.volumes?.[0]).toEqual({ name: 'empty-dir', emptyDir: {} });
  });
});
