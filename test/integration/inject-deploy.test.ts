import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseControlPlaneConfig } from '../../src/controlplane/server/config.ts';
import { injectPod, type PodTemplate } from '../../src/inject/pod.ts';
import { defaultSettings, SIDECAR_NODE_OPTIONS, WARD_BIN } from '../../src/inject/settings.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import { validatePod } from '../unit/inject/helpers.ts';

/**
 * deploy/: every kustomization renders with `kubectl kustomize` (CI installs Debian's kubectl
 * when none is present; both its kustomize v2 and current v5 render these files), every
 * rendered object is valid against the Kubernetes API schemas (kubernetes-models), and the
 * pieces fit together: selectors, ports, the webhook's service, the configs and policies ward
 * itself would load, and the sample app as the injector would rewrite it.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const KUSTOMIZATIONS = ['base', ...readdirSync(join(DEPLOY, 'overlays')).map((d) => `overlays/${d}`)];

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  webhooks?: Record<string, unknown>[];
  [k: string]: unknown;
}

function kustomize(dir: string): Promise<K8sObject[]> {
  return new Promise((resolve, reject) => {
    execFile('kubectl', ['kustomize', join(DEPLOY, dir)], { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) {
        // Never a skip: CI installs kubectl (.ci/run); a missing one is a broken machine.
        reject(new Error(`kubectl kustomize ${dir} failed: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'kubectl not installed (see .ci/run)' : stderr}`));
        return;
      }
      resolve(parseAllDocuments(stdout).map((d) => d.toJS() as K8sObject));
    });
  });
}

/** Custom resources have no schema in kubernetes-models: their required fields are checked here. */
const CUSTOM: Record<string, (o: K8sObject) => void> = {
  'cert-manager.io/v1/Issuer': (o) => expect(o.spec).toSatisfy((s: Record<string, unknown>) => ['selfSigned', 'ca', 'acme', 'vault'].some((k) => k in s)),
  'cert-manager.io/v1/ClusterIssuer': (o) => expect(o.spec).toSatisfy((s: Record<string, unknown>) => ['selfSigned', 'ca', 'acme', 'vault'].some((k) => k in s)),
  'cert-manager.io/v1/Certificate': (o) => {
    expect(o.spec).toMatchObject({ secretName: expect.any(String), issuerRef: { name: expect.any(String) } });
    // a server certificate names its hosts; a CA certificate says it is one
    expect(o.spec).toSatisfy((s: Record<string, unknown>) => Array.isArray(s['dnsNames']) || (s['isCA'] === true && typeof s['commonName'] === 'string'));
  },
  'trust.cert-manager.io/v1alpha1/Bundle': (o) =>
    expect(o.spec).toMatchObject({ sources: expect.any(Array), target: { configMap: { key: expect.any(String) }, namespaceSelector: expect.any(Object) } }),
};

async function validate(o: K8sObject): Promise<void> {
  const custom = CUSTOM[`${o.apiVersion}/${o.kind}`];
  if (custom !== undefined) {
    expect(o.metadata.name).toMatch(/^[a-z0-9-]+$/);
    custom(o);
    return;
  }
  const mod = (await import(`kubernetes-models/${o.apiVersion}`)) as Record<string, (new (d: unknown) => { validate(): void }) | undefined>;
  const Model = mod[o.kind];
  if (Model === undefined) throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

const byKind = (objs: K8sObject[], kind: string): K8sObject[] => objs.filter((o) => o.kind === kind);
const find = (objs: K8sObject[], kind: string, name: string, namespace?: string): K8sObject | undefined =>
  objs.find((o) => o.kind === kind && o.metadata.name === name && (namespace === undefined || o.metadata.namespace === namespace));
type Pod = PodTemplate['spec'];
const podOf = (d: K8sObject): { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: Pod } =>
  (d.spec as { template: { metadata: { labels?: Record<string, string> }; spec: Pod } }).template;

describe.each(KUSTOMIZATIONS)('deploy/%s', (dir) => {
  it('renders, and every object is valid against the Kubernetes API schema', async () => {
    const objs = await kustomize(dir);
    expect(objs.length).toBeGreaterThan(10);
    for (const o of objs) {
      try {
        await validate(o);
      } catch (err) {
        throw new Error(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`, { cause: err });
      }
    }
  });

  it('fits together: selectors, ports, webhook service, hardened pods', async () => {
    const objs = await kustomize(dir);
    const deployments = byKind(objs, 'Deployment');
    for (const svc of byKind(objs, 'Service')) {
      const selector = (svc.spec as { selector: Record<string, string> }).selector;
      const target = deployments.find((d) => d.metadata.namespace === svc.metadata.namespace && Object.entries(selector).every(([k, v]) => podOf(d).metadata.labels?.[k] === v));
      expect(target, `Service ${svc.metadata.name} selects a Deployment`).toBeDefined();
      const named = podOf(target!).spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
      for (const p of (svc.spec as { ports: { targetPort: string | number }[] }).ports) {
        if (typeof p.targetPort === 'string') expect(named, `Service ${svc.metadata.name} targetPort`).toContain(p.targetPort);
      }
    }
    for (const pdb of byKind(objs, 'PodDisruptionBudget')) {
      const sel = (pdb.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      expect(deployments.some((d) => d.metadata.namespace === pdb.metadata.namespace && Object.entries(sel).every(([k, v]) => podOf(d).metadata.labels?.[k] === v))).toBe(true);
    }

    // ward's own Deployments: two replicas, non-root, read-only root, no capabilities, no API token
    for (const name of ['ward-control-plane', 'ward-injector']) {
      const d = find(objs, 'Deployment', name, 'ward-system')!;
      expect(d.spec?.['replicas']).toBe(2);
      const pod = podOf(d).spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true });
      expect(pod.automountServiceAccountToken).toBe(false);
      for (const c of pod.containers) {
        expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
        expect(c.resources?.limits).toBeDefined();
        // the same V8 heap settings as an injected sidecar (docs/performance.md)
        expect(c.env?.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe(SIDECAR_NODE_OPTIONS);
      }
      expect(find(objs, 'PodDisruptionBudget', name, 'ward-system')).toBeDefined();
    }
    const injector = podOf(find(objs, 'Deployment', 'ward-injector', 'ward-system')!).spec.containers[0]!;
    expect(injector.args).toContain(`--image=${injector.image}`);

    const webhook = byKind(objs, 'MutatingWebhookConfiguration')[0]!;
    expect(webhook.webhooks).toHaveLength(2);
    for (const w of webhook.webhooks as { clientConfig: { service: { name: string; namespace: string; port: number; path: string } }; failurePolicy: string; sideEffects: string; admissionReviewVersions: string[]; namespaceSelector: { matchExpressions: { key: string; operator: string; values: string[] }[] } }[]) {
      const svc = find(objs, 'Service', w.clientConfig.service.name, w.clientConfig.service.namespace);
      expect(svc, 'the webhook calls an existing Service').toBeDefined();
      expect((svc!.spec as { ports: { port: number }[] }).ports.map((p) => p.port)).toContain(w.clientConfig.service.port);
      expect(w.clientConfig.service.path).toBe('/inject');
      expect(w).toMatchObject({ failurePolicy: 'Fail', sideEffects: 'None', admissionReviewVersions: ['v1'] });
      // the injector's own namespace is never sent to it (it must be able to start)
      expect(w.namespaceSelector.matchExpressions).toContainEqual({ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: expect.arrayContaining(['ward-system', 'kube-system']) });
    }
  });

  it('holds configs and policies that ward itself accepts', async () => {
    const objs = await kustomize(dir);
    const cp = find(objs, 'ConfigMap', 'ward-control-plane', 'ward-system')!;
    const cfg = parseControlPlaneConfig(cp.data!['control-plane.config.yaml']!, '/etc/ward/control-plane/control-plane.config.yaml');
    expect(cfg.policyDir).toBe('/etc/ward/policies');
    expect(cfg.listen.port).toBe(15010);
    for (const cm of byKind(objs, 'ConfigMap').filter((c) => c.metadata.name === 'ward-policies' || c.metadata.name.startsWith('ward-policy-'))) {
      for (const [key, text] of Object.entries(cm.data ?? {})) {
        if (!key.endsWith('.yaml')) continue;
        const service = cm.metadata.name.startsWith('ward-policy-') ? cm.metadata.name.slice('ward-policy-'.length) : key.replace(/\.yaml$/, '');
        expect(parsePolicyText(text, `${cm.metadata.name}/${key}`, { service }).service).toBe(service);
      }
    }
  });
});

/** The injector's `--name=value` argument. */
const injectorArg = (objs: K8sObject[], name: string): string | undefined =>
  podOf(find(objs, 'Deployment', 'ward-injector', 'ward-system')!)
    .spec.containers[0]!.args?.find((a) => a.startsWith(`--${name}=`))
    ?.slice(name.length + 3);

describe('the control plane over TLS, as deployed', () => {
  it('serves the mounted certificate, and is probed on its cleartext health port', async () => {
    const objs = await kustomize('base');
    const cm = find(objs, 'ConfigMap', 'ward-control-plane', 'ward-system')!;
    const cfg = parseControlPlaneConfig(cm.data!['control-plane.config.yaml']!, '/etc/ward/control-plane/control-plane.config.yaml');
    expect(cfg.tls).toBeDefined();
    expect(cfg.health).toMatchObject({ host: '0.0.0.0' });
    const pod = podOf(find(objs, 'Deployment', 'ward-control-plane', 'ward-system')!).spec;
    const c = pod.containers[0]!;
    // the certificate and key are files of the volume from Secret ward-control-plane-tls
    const tlsVolume = pod.volumes?.find((v) => v.secret?.secretName === 'ward-control-plane-tls');
    expect(tlsVolume, 'a volume from Secret ward-control-plane-tls').toBeDefined();
    const mount = c.volumeMounts?.find((m) => m.name === tlsVolume!.name);
    expect(mount?.readOnly).toBe(true);
    expect(cfg.tls!.certFile).toBe(`${mount!.mountPath}/tls.crt`);
    expect(cfg.tls!.keyFile).toBe(`${mount!.mountPath}/tls.key`);
    // every probe on the health port, which the container declares; none on the TLS port
    expect(c.ports?.find((p) => p.name === 'health')?.containerPort).toBe(cfg.health!.port);
    expect(c.ports?.find((p) => p.name === 'grpc')?.containerPort).toBe(cfg.listen.port);
    for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) expect(probe?.grpc?.port).toBe(cfg.health!.port);
    // the Service no longer calls the port cleartext
    const svc = find(objs, 'Service', 'ward-control-plane', 'ward-system')!;
    for (const p of (svc.spec as { ports: { appProtocol?: string }[] }).ports) expect(p.appProtocol).not.toBe('kubernetes.io/h2c');
    // sidecars that use the control plane get its CA from a ConfigMap of their namespace
    expect(injectorArg(objs, 'control-plane-ca')).toBe('ward-control-plane-ca');
  });

  it("the injector's certificate from cert-manager comes from a long-lived CA, which is what the webhook trusts (regression: a self-signed leaf changed the caBundle at every renewal)", async () => {
    const objs = await kustomize('overlays/cert-manager');
    const leaf = byKind(objs, 'Certificate').find((o) => (o.spec as { secretName: string }).secretName === 'ward-injector-tls')!;
    const leafIssuer = find(objs, 'Issuer', (leaf.spec as { issuerRef: { name: string } }).issuerRef.name, 'ward-system')!;
    const caSecret = (leafIssuer.spec as { ca?: { secretName: string } }).ca?.secretName;
    expect(caSecret, 'the serving certificate is signed by a CA issuer').toBeDefined();
    const ca = byKind(objs, 'Certificate').find((o) => o.metadata.namespace === 'ward-system' && (o.spec as { secretName: string }).secretName === caSecret)!;
    expect(ca.spec).toMatchObject({ isCA: true, duration: '87600h' });
    const webhook = byKind(objs, 'MutatingWebhookConfiguration')[0]!;
    expect(webhook.metadata.annotations?.['cert-manager.io/inject-ca-from']).toBe(`ward-system/${ca.metadata.name}`);
  });

  it('gets its certificate from cert-manager and its CA into enrolled namespaces through trust-manager', async () => {
    const objs = await kustomize('overlays/cert-manager');
    const svcHost = 'ward-control-plane.ward-system.svc';
    const cert = byKind(objs, 'Certificate').find((o) => (o.spec as { secretName: string }).secretName === 'ward-control-plane-tls');
    expect(cert?.metadata.namespace).toBe('ward-system');
    const spec = cert!.spec as { dnsNames: string[]; issuerRef: { kind: string; name: string } };
    expect(spec.dnsNames).toContain(svcHost);
    // issued by a CA ClusterIssuer whose CA is a long-lived CA Certificate in cert-manager's namespace
    expect(spec.issuerRef.kind).toBe('ClusterIssuer');
    const issuer = find(objs, 'ClusterIssuer', spec.issuerRef.name)!;
    const caSecret = (issuer.spec as { ca: { secretName: string } }).ca.secretName;
    const ca = byKind(objs, 'Certificate').find((o) => o.metadata.namespace === 'cert-manager' && (o.spec as { secretName: string }).secretName === caSecret);
    expect(ca?.spec).toMatchObject({ isCA: true });
    const caIssuer = (ca!.spec as { issuerRef: { name: string } }).issuerRef.name;
    expect(find(objs, 'Issuer', caIssuer, 'cert-manager')).toBeDefined();
    // trust-manager publishes that CA as the ConfigMap the injector mounts, in enrolled namespaces
    const bundle = find(objs, 'Bundle', injectorArg(objs, 'control-plane-ca')!)!;
    expect(bundle, 'a Bundle named as the injector\'s --control-plane-ca').toBeDefined();
    expect(bundle.spec).toMatchObject({ sources: [{ secret: { name: caSecret, key: 'ca.crt' } }], target: { configMap: { key: 'ca.crt' } } });
    const enrolled = (bundle.spec as { target: { namespaceSelector: { matchLabels: Record<string, string> } } }).target.namespaceSelector.matchLabels;
    const sample = find(await kustomize('overlays/sample'), 'Namespace', 'ward-demo')!;
    expect(Object.entries(enrolled).every(([k, v]) => sample.metadata.labels?.[k] === v), 'an enrolled namespace is selected').toBe(true);
  });
});

describe('deploy/overlays/sample as the injector rewrites it', () => {
  it('injects the sample app into a valid pod that finds its policy ConfigMap', async () => {
    const objs = await kustomize('overlays/sample');
    const ns = find(objs, 'Namespace', 'ward-demo')!;
    expect(ns.metadata.labels?.['ward.dev/inject']).toBe('enabled');
    const orders = find(objs, 'Deployment', 'orders', 'ward-demo')!;
    const outcome = injectPod(podOf(orders), { namespaceEnabled: true, workloadName: 'orders' }, defaultSettings());
    if (outcome.kind !== 'injected') throw new Error(`sample not injected: ${JSON.stringify(outcome)}`);
    validatePod(outcome.template);
    expect(outcome.service).toBe('orders');
    const policyVolume = outcome.template.spec.volumes?.find((v) => v.name === 'ward-policy');
    const cm = find(objs, 'ConfigMap', policyVolume!.configMap!.name!, 'ward-demo');
    expect(cm, 'the policy ConfigMap the sidecar mounts is in the overlay').toBeDefined();
    expect(Object.keys(cm!.data!)).toContain(policyVolume!.configMap!.items![0]!.key);
    // the app's readiness probe passes through the sidecar: the policy lets it in without a token
    expect(outcome.warnings.join()).toContain('/healthz');
    expect(cm!.data!['policy.yaml']).toContain('token: optional');
  });
});

describe('deploy/Dockerfile', () => {
  const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  const lines = dockerfile.split('\n').filter((l) => !l.startsWith('#'));

  it('is multi-stage on Node 24 slim, installs production dependencies only and runs as non-root', () => {
    expect(lines.filter((l) => /^FROM node:24-slim\b/.test(l))).toHaveLength(3);
    expect(dockerfile).toMatch(/npm ci --omit=dev\b/);
    const user = lines.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user).toMatch(/^USER [1-9]\d*:[1-9]\d*$/);
    // the injector's commands assume ward at /app/bin/ward.js
    expect(dockerfile).toContain('WORKDIR /app');
    expect(dockerfile).toContain('COPY bin ./bin');
    expect(WARD_BIN).toBe('/app/bin/ward.js');
    for (const dir of ['src', 'proto']) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
    // two malloc arenas, not one per thread (docs/performance.md)
    expect(lines).toContain('ENV MALLOC_ARENA_MAX=2');
  });

  it('builds the native addon in a stage of its own (the compiler stays out of the image) and ships it', () => {
    expect(lines).toContain('RUN node bin/build-native.js --require');
    expect(lines).toContain('COPY --from=native /app/native/build ./native/build');
    const runtimeFrom = lines.findLastIndex((l) => l.startsWith('FROM '));
    expect(lines.slice(runtimeFrom).some((l) => l.includes('gcc'))).toBe(false);
  });

  it('fills the compile cache at build time, as the uid ward runs as (Node keeps one cache per uid)', () => {
    const userAt = lines.findLastIndex((l) => l.startsWith('USER '));
    const warmAt = lines.findIndex((l) => l === 'RUN node bin/warm-compile-cache.js');
    expect(warmAt, 'bin/warm-compile-cache.js runs').toBeGreaterThan(-1);
    expect(warmAt, 'after the last USER line').toBeGreaterThan(userAt);
    // …into the directory bin/compile-cache.js uses, made writable for that uid first.
    expect(dockerfile).toContain(`chown ${lines[userAt]!.slice('USER '.length)} node_modules/.cache/ward`);
  });

  it('ships everything src/ loads at run time: no runtime import of a devDependency', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const runtime = new Set(Object.keys(pkg.dependencies));
    const files = readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    const offenders: string[] = [];
    for (const f of files) {
      const text = readFileSync(join(ROOT, 'src', f), 'utf8');
      // `import type …` is erased by type stripping; anything else is loaded.
      for (const m of text.matchAll(/^(?:import|export)\s+(?!type\s)[^'"]*?from\s+['"]([^'"]+)['"]|^import\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm)) {
        const spec = m[1] ?? m[2] ?? m[3]!;
        if (spec.startsWith('.') || spec.startsWith('node:')) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!runtime.has(name)) offenders.push(`src/${f}: ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
