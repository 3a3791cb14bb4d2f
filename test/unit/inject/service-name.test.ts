import { describe, expect, it } from 'vitest';
import { reviewAdmission } from '../../../src/inject/admission.ts';
import { injectManifests } from '../../../src/inject/manifests.ts';
import { injectPod, type PodTemplate } from '../../../src/inject/pod.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';
import { createLogger } from '../../../src/lib/log.ts';

/**
 * docs/kubernetes.md: `ward.dev/service` defaults to "label app.kubernetes.io/name, then app, then
 * the workload name", and "ward inject and the webhook must produce the same pod". Pods a
 * controller created (a StatefulSet's `web-0`, an Indexed Job's `reindex-2-`, a CronJob run's
 * `nightly-28473920-`) got a per-replica or per-run service from the webhook, so their policy
 * ConfigMap (`ward-policy-<service>`) never existed (found in review; regression).
 */
const settings = defaultSettings();
const log = createLogger({ level: 'error', sink: { write: () => {} } });
const spec = { containers: [{ name: 'app', image: 'example/web:1', ports: [{ name: 'http', containerPort: 8080 }] }] };

function webhookService(metadata: Record<string, unknown>): string {
  const r = reviewAdmission(
    {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: { uid: 'u1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'shop', object: { apiVersion: 'v1', kind: 'Pod', metadata, spec } },
    },
    settings,
    log,
  );
  const res = (r.body as { response: { allowed: boolean; patch?: string } }).response;
  expect(res.allowed).toBe(true);
  const ops = JSON.parse(Buffer.from(res.patch!, 'base64').toString('utf8')) as { path: string; value: unknown }[];
  const vols = ops.find((o) => o.path === '/spec/volumes')!.value as { name: string; configMap?: { name: string } }[];
  return vols.find((v) => v.name === 'ward-policy')!.configMap!.name;
}

function wardInjectService(yaml: string): string {
  const { reports } = injectManifests(yaml, 'x.yaml', settings, { all: true, defaultNamespace: 'shop' });
  expect(reports[0]!.outcome).toBe('injected');
  return reports[0]!.detail.replace(/^service (\S+).*$/, '$1');
}

describe('service name of controller-created pods (webhook) is the workload name (ward inject)', () => {
  it('StatefulSet pod web-0 gets the service of StatefulSet web', () => {
    const sts = `apiVersion: apps/v1
kind: StatefulSet
metadata: { name: web }
spec:
  serviceName: web
  selector: { matchLabels: { component: web } }
  template:
    metadata: { labels: { component: web } }
    spec: { containers: [{ name: app, image: example/web:1, ports: [{ name: http, containerPort: 8080 }] }] }
`;
    expect(wardInjectService(sts)).toBe('web');
    // What the StatefulSet controller sends to the webhook (GetPodFromTemplate + pod.Name = web-0).
    const fromController = {
      name: 'web-0',
      generateName: 'web-',
      labels: { component: 'web', 'controller-revision-hash': 'web-7c9d8f', 'statefulset.kubernetes.io/pod-name': 'web-0', 'apps.kubernetes.io/pod-index': '0' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'web', uid: 'a', controller: true, blockOwnerDeletion: true }],
    };
    expect(webhookService(fromController)).toBe('ward-policy-web');
  });

  it('Indexed Job pod (generateName <job>-<index>-) gets the service of Job reindex', () => {
    const t: PodTemplate = {
      metadata: {
        generateName: 'reindex-2-',
        labels: { 'batch.kubernetes.io/job-name': 'reindex', 'job-name': 'reindex', 'batch.kubernetes.io/job-completion-index': '2' },
        ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: 'reindex', uid: 'j', controller: true }],
      },
      spec,
    };
    expect(injectPod(t, { namespaceEnabled: true }, settings)).toMatchObject({ kind: 'injected', service: 'reindex' });
  });

  it('CronJob run pod gets the service of CronJob nightly, as ward inject gives it', () => {
    const cj = `apiVersion: batch/v1
kind: CronJob
metadata: { name: nightly }
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec: { restartPolicy: Never, containers: [{ name: app, image: example/web:1 }] }
`;
    expect(wardInjectService(cj)).toBe('nightly');
    const t: PodTemplate = {
      metadata: {
        generateName: 'nightly-28473920-',
        labels: { 'job-name': 'nightly-28473920', 'batch.kubernetes.io/job-name': 'nightly-28473920' },
        ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: 'nightly-28473920', uid: 'j', controller: true }],
      },
      spec,
    };
    expect(injectPod(t, { namespaceEnabled: true }, settings)).toMatchObject({ kind: 'injected', service: 'nightly' });
  });

  it('a DaemonSet or ReplicaSet owner names the service; a Job named by a date is not taken for a CronJob run', () => {
    const owned = (kind: string, name: string, labels: Record<string, string> = {}): PodTemplate => ({
      metadata: { generateName: `${name}-`, labels, ownerReferences: [{ apiVersion: 'apps/v1', kind, name, uid: 'u', controller: true }] },
      spec,
    });
    expect(injectPod(owned('DaemonSet', 'agent'), { namespaceEnabled: true }, settings)).toMatchObject({ service: 'agent' });
    expect(injectPod(owned('ReplicaSet', 'api-5d8f7c9b4', { 'pod-template-hash': '5d8f7c9b4' }), { namespaceEnabled: true }, settings)).toMatchObject({ service: 'api' });
    const dated: PodTemplate = { metadata: { generateName: 'report-20261127-', labels: { 'batch.kubernetes.io/job-name': 'report-20261127' }, ownerReferences: [{ kind: 'Job', name: 'report-20261127', controller: true }] }, spec };
    expect(injectPod(dated, { namespaceEnabled: true }, settings)).toMatchObject({ service: 'report-20261127' });
    // A pod of its own with a job-name label is not a Job's: its own name.
    const bare: PodTemplate = { metadata: { name: 'tool', labels: { 'job-name': 'x' } }, spec };
    expect(injectPod(bare, { namespaceEnabled: true }, settings)).toMatchObject({ service: 'tool' });
  });
});
