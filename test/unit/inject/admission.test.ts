import { describe, expect, it } from 'vitest';
import { diffPod, escapePointer, reviewAdmission } from '../../../src/inject/admission.ts';
import { injectPod, type PodTemplate } from '../../../src/inject/pod.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';
import { createLogger } from '../../../src/lib/log.ts';
import { applyPatch, chartObjects, pod, podTemplateOf, validatePod } from './helpers.ts';

const settings = defaultSettings();
const lines: string[] = [];
const log = createLogger({ level: 'debug', sink: { write: (l) => lines.push(l) } });

function review(object: unknown, over: Record<string, unknown> = {}): unknown {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object,
      dryRun: false,
      ...over,
    },
  };
}

function response(body: unknown): Record<string, unknown> {
  const b = body as { apiVersion: string; kind: string; response: Record<string, unknown> };
  expect(b.apiVersion).toBe('admission.k8s.io/v1');
  expect(b.kind).toBe('AdmissionReview');
  expect(b.response['uid']).toBe('705ab4f5-6393-11e8-b7cc-42010a800002');
  return b.response;
}

function patchOf(r: Record<string, unknown>): { op: string; path: string; value?: unknown }[] {
  expect(r['patchType']).toBe('JSONPatch');
  return JSON.parse(Buffer.from(r['patch'] as string, 'base64').toString('utf8'));
}

const asPod = (t: PodTemplate): Record<string, unknown> => ({ apiVersion: 'v1', kind: 'Pod', metadata: t.metadata, spec: t.spec });

describe('reviewAdmission', () => {
  it('answers with a JSONPatch that turns the pod into exactly what injectPod produces', () => {
    const input = asPod(pod());
    const r = reviewAdmission(review(input), settings, log);
    expect(r.status).toBe(200);
    const res = response(r.body);
    expect(res['allowed']).toBe(true);
    const patched = applyPatch(input, patchOf(res)) as PodTemplate;
    const expected = injectPod(pod(), { namespaceEnabled: true }, settings);
    if (expected.kind !== 'injected') throw new Error('not injected');
    expect(patched.spec).toEqual(expected.template.spec);
    expect(patched.metadata).toEqual(expected.template.metadata);
    validatePod(patched);
  });

  it('applied twice (a second webhook call on the patched pod), changes nothing more', () => {
    const input = asPod(pod());
    const once = applyPatch(input, patchOf(response(reviewAdmission(review(input), settings, log).body)));
    const again = response(reviewAdmission(review(once), settings, log).body);
    expect(again).toEqual({ uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true });
  });

  it('patches pods from common charts (as the ReplicaSet controller creates them) into valid pods', () => {
    for (const obj of chartObjects()) {
      if (obj.kind === 'Namespace' || obj.kind === 'Service') continue;
      const t = podTemplateOf(obj);
      // What reaches the webhook: the template as a Pod with generateName, no name yet.
      const input = { apiVersion: 'v1', kind: 'Pod', metadata: { ...t.metadata, generateName: `${obj.metadata.name}-` }, spec: t.spec };
      const res = response(reviewAdmission(review(input), settings, log).body);
      expect(res['allowed']).toBe(true);
      if (res['patch'] === undefined) continue; // skipped (opted out, host network)
      const patched = applyPatch(input, patchOf(res)) as PodTemplate;
      validatePod(patched);
      expect(patched.spec.initContainers?.[0]?.name).toBe('ward-init');
    }
  });

  it('adds metadata when the pod has none, and escapes annotation keys in paths', () => {
    const ops = diffPod({ spec: { containers: [] } }, { metadata: { annotations: { 'ward.dev/status': 'injected' } }, spec: { containers: [] } }, true);
    expect(ops).toEqual([{ op: 'add', path: '/metadata', value: { annotations: { 'ward.dev/status': 'injected' } } }]);
    // a pod without metadata has no name to derive a service from: refused, with the remedy
    const bare = response(reviewAdmission(review({ apiVersion: 'v1', kind: 'Pod', spec: pod().spec }), settings, log).body);
    expect(bare['status']).toMatchObject({ message: expect.stringContaining('set ward.dev/service') });
    expect(escapePointer('ward.dev/status')).toBe('ward.dev~1status');
    expect(escapePointer('a~b')).toBe('a~0b');
    const d = diffPod({ metadata: { annotations: { x: '1' } }, spec: { containers: [] } }, { metadata: { labels: { 'a/b': 'c' } }, spec: { containers: [] } }, false);
    expect(d).toEqual([
      { op: 'add', path: '/metadata/labels', value: { 'a/b': 'c' } },
      { op: 'remove', path: '/metadata/annotations' },
    ]);
  });

  it('allows, unchanged, what it must not touch', () => {
    const allowedOnly = (body: unknown): void => {
      const r = reviewAdmission(body, settings, log);
      expect(r.status).toBe(200);
      expect(response(r.body)).toEqual({ uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true });
    };
    allowedOnly(review(asPod(pod({ annotations: { 'ward.dev/inject': 'disabled' } }))));
    allowedOnly(review(asPod(pod({ spec: { hostNetwork: true } }))));
    allowedOnly(review(asPod(pod()), { operation: 'UPDATE' }));
    allowedOnly(review({ apiVersion: 'apps/v1', kind: 'Deployment' }, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }));
    allowedOnly(review({ metadata: {} })); // a Pod without a spec: nothing to inject into
  });

  it('denies an opted-in pod whose annotations cannot be honoured, saying why', () => {
    const res = response(reviewAdmission(review(asPod(pod({ annotations: { 'ward.dev/app-port': 'http' } }))), settings, log).body);
    expect(res['allowed']).toBe(false);
    expect(res['patch']).toBeUndefined();
    expect(res['status']).toMatchObject({ code: 400, message: expect.stringContaining("ward.dev/app-port: 'http'") });
    expect(lines.some((l) => l.includes('pod refused'))).toBe(true);
  });

  it('returns warnings to kubectl for probes that now pass through the sidecar', () => {
    const p = pod();
    p.spec.containers[0]!.readinessProbe = { httpGet: { path: '/ready', port: 8080 } };
    const res = response(reviewAdmission(review(asPod(p)), settings, log).body);
    expect(res['warnings']).toEqual([expect.stringMatching(/^ward: container app: the readinessProbe/)]);
  });

  it('answers 400 to what is not an AdmissionReview v1 with a uid', () => {
    expect(reviewAdmission(null, settings, log).status).toBe(400);
    expect(reviewAdmission({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }, settings, log).status).toBe(400);
    expect(reviewAdmission({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: '' } }, settings, log).status).toBe(400);
    expect(reviewAdmission({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, settings, log).status).toBe(400);
  });
});
