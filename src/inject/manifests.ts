import { type Document, LineCounter, parseAllDocuments } from 'yaml';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';
import { diffPod } from './admission.ts';
import { A, parseLabelSwitch } from './annotations.ts';
import { injectPod, type PodTemplate } from './pod.ts';
import type { InjectorSettings } from './settings.ts';

/**
 * `ward inject`: Kubernetes YAML in (several documents, `List`s included), the same YAML out
 * with the sidecar injected into every opted-in workload - like `istioctl kube-inject`.
 * Only the fields injection changes are rewritten; other documents, fields and comments stay.
 * Injecting the output again changes nothing (injected pods carry `ward.dev/status`).
 */

/** Where each workload kind keeps its pod template. */
const TEMPLATE_PATH: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

/** The namespaces deploy/base/webhook.yaml never sends to the injector (a test keeps the two equal). */
export const NEVER_SENT: ReadonlySet<string> = new Set(['ward-system', 'kube-system', 'kube-public', 'kube-node-lease']);

export interface ManifestReport {
  /** `Kind/namespace/name`. */
  readonly ref: string;
  readonly outcome: 'injected' | 'skipped' | 'refused';
  readonly detail: string;
}

export interface InjectManifestsOptions {
  /** Treat every workload as opted in unless it opts out (istioctl kube-inject's behaviour). */
  readonly all: boolean;
  /** Namespace of objects without metadata.namespace. */
  readonly defaultNamespace: string;
}

export function injectManifests(
  text: string,
  file: string,
  settings: InjectorSettings,
  opts: InjectManifestsOptions,
): { output: string; reports: ManifestReport[] } {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, uniqueKeys: true, strict: true });
  if (!Array.isArray(docs)) return { output: text, reports: [] }; // an empty stream
  const issues: FileIssue[] = [];
  for (const d of docs) {
    for (const err of d.errors) {
      const pos = lineCounter.linePos(err.pos[0]);
      issues.push({ file, line: pos.line, column: pos.col, path: '', message: err.message.split('\n', 1)[0] ?? err.message });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);

  // Objects: [document, path of the object within it, the object].
  const objects: { doc: Document; path: (string | number)[]; obj: Record<string, unknown> }[] = [];
  for (const doc of docs) {
    const js: unknown = doc.toJS({ maxAliasCount: 100 });
    if (!isObject(js)) continue;
    if (js['kind'] === 'List' && Array.isArray(js['items'])) {
      js['items'].forEach((item, i) => {
        if (isObject(item)) objects.push({ doc, path: ['items', i], obj: item });
      });
    } else {
      objects.push({ doc, path: [], obj: js });
    }
  }

  const enabledNamespaces = new Set<string>();
  /** Opted out: the webhook is never sent their pods, a pod's own opt-in included. */
  const disabledNamespaces = new Set<string>();
  const reports: ManifestReport[] = [];
  for (const { obj } of objects) {
    const meta = obj['metadata'];
    if (obj['kind'] === 'Namespace' && isObject(meta) && typeof meta['name'] === 'string' && isObject(meta['labels'])) {
      const value = meta['labels'][A.inject];
      const on = parseLabelSwitch(asString(value));
      if (on === true) enabledNamespaces.add(meta['name']);
      else if (on === false) disabledNamespaces.add(meta['name']);
      // Not enrolled, as the webhook's namespaceSelector would not enrol it: said, not guessed.
      else if (on === null || (value !== undefined && typeof value !== 'string')) {
        reports.push({ ref: `Namespace/${meta['name']}`, outcome: 'refused', detail: `label ${A.inject}: '${String(value)}' is not one of enabled, disabled, true, false (label values are matched exactly, as the webhook's selectors match them); its pods are not enrolled` });
      }
    }
  }

  const changed = new Set<Document>();
  for (const { doc, path, obj } of objects) {
    const kind = asString(obj['kind']);
    const templatePath = kind === undefined ? undefined : TEMPLATE_PATH[kind];
    if (templatePath === undefined) continue;
    const meta = isObject(obj['metadata']) ? obj['metadata'] : {};
    const name = asString(meta['name']) ?? '';
    const namespace = asString(meta['namespace']) ?? opts.defaultNamespace;
    const ref = `${kind}/${namespace}/${name}`;
    const template = getPath(obj, templatePath);
    if (!isObject(template) || !isObject(template['spec'])) {
      reports.push({ ref, outcome: 'refused', detail: `no pod template at ${templatePath.join('.') || '(root)'}` });
      continue;
    }
    if (NEVER_SENT.has(namespace)) {
      // as deploy/base/webhook.yaml: neither webhook's namespaceSelector takes these (found in
      // review: `ward inject` injected kube-system's pods, which the cluster never would)
      reports.push({ ref, outcome: 'skipped', detail: `namespace ${namespace} is never injected (the webhook's namespaceSelector excludes it)` });
      continue;
    }
    if (disabledNamespaces.has(namespace)) {
      // as deploy/base/webhook.yaml: neither webhook's namespaceSelector takes such a namespace
      reports.push({ ref, outcome: 'skipped', detail: `namespace opted out (label ${A.inject} on Namespace/${namespace})` });
      continue;
    }
    const before: PodTemplate = { metadata: isObject(template['metadata']) ? template['metadata'] : {}, spec: template['spec'] as unknown as PodTemplate['spec'] };
    const outcome = injectPod(before, { namespaceEnabled: opts.all || enabledNamespaces.has(namespace), workloadName: name }, settings);
    if (outcome.kind === 'skipped') {
      reports.push({ ref, outcome: 'skipped', detail: outcome.reason });
      continue;
    }
    if (outcome.kind === 'refused') {
      reports.push({ ref, outcome: 'refused', detail: outcome.problems.join('; ') });
      continue;
    }
    const base = [...path, ...templatePath];
    for (const op of diffPod(before, outcome.template, !isObject(template['metadata']))) {
      const target = [...base, ...op.path.split('/').slice(1).map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'))];
      if (op.op === 'remove') doc.deleteIn(target);
      else doc.setIn(target, doc.createNode(op.value));
    }
    changed.add(doc);
    reports.push({ ref, outcome: 'injected', detail: `service ${outcome.service}${outcome.warnings.length > 0 ? `; ${outcome.warnings.join('; ')}` : ''}` });
  }

  const out = docs.map((d, i) => {
    const s = d.toString({ lineWidth: 0 });
    return i > 0 && !s.startsWith('---') ? `---\n${s}` : s;
  });
  // Unchanged input stays byte-identical when nothing was injected.
  return { output: changed.size === 0 ? text : out.join(''), reports };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function getPath(obj: Record<string, unknown>, path: readonly string[]): unknown {
  let cur: unknown = obj;
  for (const p of path) {
    if (!isObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

