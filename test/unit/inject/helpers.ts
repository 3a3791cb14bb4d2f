import { readFileSync } from 'node:fs';
import { Pod } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import type { PodTemplate } from '../../../src/inject/pod.ts';

export const CHARTS = new URL('../../fixtures/k8s/charts.yaml', import.meta.url);

/** A Kubernetes object as tests read it back (fields beyond these are reached with podTemplateOf). */
export interface KObject {
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  spec: Record<string, unknown>;
  [k: string]: unknown;
}

/** The documents of test/fixtures/k8s/charts.yaml, as plain objects. */
export function chartObjects(): KObject[] {
  return parseAllDocuments(readFileSync(CHARTS, 'utf8')).map((d) => d.toJS() as KObject);
}

export function podTemplateOf(obj: KObject): PodTemplate {
  if (obj.kind === 'Pod') return { metadata: obj.metadata, spec: obj.spec as unknown as PodTemplate['spec'] };
  if (obj.kind === 'CronJob') return ((obj.spec['jobTemplate'] as KObject).spec['template']) as PodTemplate;
  return obj.spec['template'] as PodTemplate;
}

/** A minimal pod: one container, one named port. */
export function pod(over: { annotations?: Record<string, string>; labels?: Record<string, string>; spec?: Record<string, unknown> } = {}): PodTemplate {
  return {
    metadata: { name: 'orders-abc', labels: { app: 'orders', ...over.labels }, ...(over.annotations === undefined ? {} : { annotations: over.annotations }) },
    spec: { containers: [{ name: 'app', image: 'example/orders:1', ports: [{ name: 'http', containerPort: 8080 }] }], ...over.spec },
  };
}

/** Validates a pod against the Kubernetes API schema (kubernetes-models); throws with the errors. */
export function validatePod(t: PodTemplate): void {
  new Pod({ metadata: { name: 'x', ...t.metadata }, spec: t.spec }).validate();
}

/** RFC 6902 add / replace / remove on a JSON value (what the API server does with our patch). */
export function applyPatch(doc: unknown, ops: readonly { op: string; path: string; value?: unknown }[]): unknown {
  const root = structuredClone(doc) as Record<string, unknown>;
  for (const op of ops) {
    const parts = op.path.split('/').slice(1).map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = parts.pop()!;
    let parent = root;
    for (const p of parts) {
      const next = parent[p];
      if (typeof next !== 'object' || next === null) throw new Error(`patch path ${op.path}: missing ${p}`);
      parent = next as Record<string, unknown>;
    }
    if (op.op === 'add') parent[last] = structuredClone(op.value);
    else if (op.op === 'replace') {
      if (!(last in parent)) throw new Error(`replace of missing ${op.path}`);
      parent[last] = structuredClone(op.value);
    } else if (op.op === 'remove') delete parent[last];
    else throw new Error(`unsupported op ${op.op}`);
  }
  return root;
}
