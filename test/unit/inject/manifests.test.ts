import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { injectManifests } from '../../../src/inject/manifests.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';
import { CHARTS, type KObject, podTemplateOf, validatePod } from './helpers.ts';

const settings = defaultSettings();
const opts = { all: false, defaultNamespace: 'default' };
const charts = readFileSync(CHARTS, 'utf8');

describe('injectManifests (ward inject)', () => {
  it('a ward.dev/* label or annotation that is not a string (unquoted YAML) is refused by name, never a TypeError (regression)', () => {
    const settings = defaultSettings();
    const pod = (meta: string): string => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n${meta}\nspec:\n  containers: [{ name: app, image: x }]\n`;
    const label = injectManifests(pod('  labels: { ward.dev/inject: true }'), 'in.yaml', settings, { all: false, defaultNamespace: 'default' });
    expect(label.reports).toEqual([expect.objectContaining({ outcome: 'refused', detail: expect.stringContaining('label ward.dev/inject: the value must be a string (quote it in YAML)') })]);
    const annotation = injectManifests(pod('  annotations: { ward.dev/inject: enabled, ward.dev/app-port: 8080 }'), 'in.yaml', settings, { all: false, defaultNamespace: 'default' });
    expect(annotation.reports).toEqual([expect.objectContaining({ outcome: 'refused', detail: expect.stringContaining('annotation ward.dev/app-port: the value must be a string') })]);
    const quoted = injectManifests(pod('  annotations: { ward.dev/inject: "true", ward.dev/app-port: "8080" }'), 'in.yaml', settings, { all: false, defaultNamespace: 'default' });
    expect(quoted.reports[0]?.outcome).toBe('injected');
  });

  it('injects opted-in workloads of every kind, reports the rest, keeps other documents', () => {
    const { output, reports } = injectManifests(charts, 'charts.yaml', settings, opts);
    expect(reports.map((r) => `${r.ref} ${r.outcome}`)).toEqual([
      'Deployment/shop/web injected',
      'StatefulSet/shop/redis-master skipped',
      'DaemonSet/shop/node-exporter skipped',
      'Deployment/shop/orders injected',
      'Job/shop/report injected',
      'CronJob/shop/cleanup injected',
      'Pod/tools/debug injected',
    ]);
    const docs = parseAllDocuments(output).map((d) => d.toJS() as KObject);
    expect(docs.map((d) => d.kind)).toEqual(['Namespace', 'Deployment', 'StatefulSet', 'DaemonSet', 'Deployment', 'Job', 'CronJob', 'Pod', 'Service']);
    for (const d of docs) {
      if (!['Deployment', 'Job', 'CronJob', 'Pod'].includes(d.kind)) continue;
      const t = podTemplateOf(d);
      validatePod(t);
      expect(t.spec.initContainers?.map((c) => c.name).slice(0, 2)).toEqual(['ward-init', 'ward-sidecar']);
    }
    // comments and untouched fields survive
    expect(output).toContain('# bitnami/redis-style StatefulSet');
    expect(docs[2]).toEqual(parseAllDocuments(charts)[2]!.toJS());
  });

  it('is idempotent: injecting its own output changes nothing', () => {
    const once = injectManifests(charts, 'charts.yaml', settings, opts).output;
    const twice = injectManifests(once, 'out.yaml', settings, opts);
    expect(twice.output).toBe(once);
    expect(twice.reports.filter((r) => r.outcome === 'injected')).toEqual([]);
  });

  it('without a Namespace document, injects only annotated pods unless --all', () => {
    const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  template:
    metadata: { labels: { app: api } }
    spec:
      containers: [{ name: api, image: example/api, ports: [{ containerPort: 3000 }] }]
`;
    const plain = injectManifests(deployment, 'd.yaml', settings, opts);
    expect(plain.output).toBe(deployment);
    expect(plain.reports).toEqual([{ ref: 'Deployment/default/api', outcome: 'skipped', detail: 'not opted in' }]);
    const all = injectManifests(deployment, 'd.yaml', settings, { ...opts, all: true });
    expect(all.reports[0]?.outcome).toBe('injected');
    expect(all.output).toContain('url: http://127.0.0.1:3000');
  });

  it('handles List documents', () => {
    const list = JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', annotations: { 'ward.dev/inject': 'true' } }, spec: { containers: [{ name: 'c', image: 'i' }] } }],
    });
    const { output, reports } = injectManifests(list, 'l.json', settings, opts);
    expect(reports[0]).toMatchObject({ ref: 'Pod/default/p', outcome: 'injected' });
    const item = (parseAllDocuments(output)[0]!.toJS() as { items: KObject[] }).items[0]!;
    expect(podTemplateOf(item).spec.initContainers?.[1]?.name).toBe('ward-sidecar');
  });

  it('reports refusals and YAML errors with file:line:column', () => {
    const bad = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: { ward.dev/inject: "true", ward.dev/app-port: "0" }\nspec:\n  containers: [{ name: c, image: i }]\n';
    expect(injectManifests(bad, 'p.yaml', settings, opts).reports[0]).toMatchObject({ outcome: 'refused', detail: expect.stringContaining('ward.dev/app-port') });
    try {
      injectManifests('kind: Pod\nspec: [\n', 'broken.yaml', settings, opts);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]).toMatchObject({ file: 'broken.yaml', line: expect.any(Number) });
    }
  });

  it('passes empty input and non-workload documents through untouched', () => {
    expect(injectManifests('', 'e.yaml', settings, opts)).toEqual({ output: '', reports: [] });
    const svc = 'apiVersion: v1\nkind: Service\nmetadata: { name: s }\n';
    expect(injectManifests(svc, 's.yaml', settings, { ...opts, all: true }).output).toBe(svc);
  });
});
