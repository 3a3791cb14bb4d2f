import type { Logger } from '../lib/log.ts';
import { injectPod, type PodTemplate } from './pod.ts';
import type { InjectorSettings } from './settings.ts';

/**
 * The mutating admission webhook's logic (AdmissionReview v1 in, AdmissionReview v1 out with a
 * JSONPatch), pure apart from logging. The HTTPS server around it is webhook-server.ts.
 *
 * It never breaks a pod it should not touch: anything but a Pod CREATE, an opted-out,
 * already-injected or host-network pod is allowed unchanged. A pod that opted in but cannot be
 * protected as its annotations ask is denied with the reason, so it does not run unprotected.
 */

export interface AdmissionResult {
  /** HTTP status of the webhook's answer: 200 with a review, 400 for a malformed request. */
  readonly status: number;
  readonly body: unknown;
}

export interface JsonPatchOp {
  readonly op: 'add' | 'replace' | 'remove';
  readonly path: string;
  readonly value?: unknown;
}

interface AdmissionRequest {
  uid: string;
  kind?: { group?: string; version?: string; kind?: string };
  operation?: string;
  namespace?: string;
  object?: unknown;
}

export function reviewAdmission(body: unknown, settings: InjectorSettings, log: Logger): AdmissionResult {
  const review = body as { apiVersion?: unknown; kind?: unknown; request?: AdmissionRequest } | null;
  if (review === null || typeof review !== 'object' || review.kind !== 'AdmissionReview' || review.apiVersion !== 'admission.k8s.io/v1') {
    return { status: 400, body: { error: 'expected an admission.k8s.io/v1 AdmissionReview' } };
  }
  const req = review.request;
  if (req === undefined || req === null || typeof req !== 'object' || typeof req.uid !== 'string' || req.uid === '') {
    return { status: 400, body: { error: 'AdmissionReview without request.uid' } };
  }
  const respond = (response: Record<string, unknown>): AdmissionResult => ({
    status: 200,
    body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: req.uid, ...response } },
  });

  const isPod = req.kind?.kind === 'Pod' && (req.kind.group ?? '') === '' && req.operation === 'CREATE';
  const pod = req.object as { metadata?: PodTemplate['metadata']; spec?: PodTemplate['spec'] } | undefined;
  if (!isPod || pod === undefined || pod === null || typeof pod !== 'object' || typeof pod.spec !== 'object' || pod.spec === null) {
    return respond({ allowed: true });
  }
  const ref = {
    namespace: req.namespace ?? pod.metadata?.namespace ?? '',
    pod: pod.metadata?.name ?? pod.metadata?.generateName ?? '',
  };

  // The webhook's selectors only send pods of enrolled namespaces or pods labelled to opt in.
  const outcome = injectPod({ metadata: pod.metadata ?? {}, spec: pod.spec }, { namespaceEnabled: true }, settings);
  switch (outcome.kind) {
    case 'skipped':
      log.info('pod not injected', { ...ref, reason: outcome.reason });
      return respond({ allowed: true });
    case 'refused':
      log.warn('pod refused', { ...ref, problems: outcome.problems });
      return respond({
        allowed: false,
        status: { code: 400, reason: 'BadRequest', message: `ward: cannot inject the sidecar: ${outcome.problems.join('; ')}` },
      });
    case 'injected': {
      const patch = diffPod({ metadata: pod.metadata ?? {}, spec: pod.spec }, outcome.template, pod.metadata === undefined);
      log.info('pod injected', { ...ref, service: outcome.service, ops: patch.length, warnings: outcome.warnings });
      return respond({
        allowed: true,
        patchType: 'JSONPatch',
        patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
        ...(outcome.warnings.length > 0 ? { warnings: outcome.warnings.map((w) => `ward: ${w}`) } : {}),
      });
    }
  }
}

/**
 * RFC 6902 operations turning `before` into `after`, at the granularity of the fields the
 * injector changes (each changed member of metadata and spec is replaced whole).
 */
export function diffPod(before: PodTemplate, after: PodTemplate, noMetadata: boolean): JsonPatchOp[] {
  const ops: JsonPatchOp[] = [];
  if (noMetadata && after.metadata !== undefined) {
    ops.push({ op: 'add', path: '/metadata', value: after.metadata });
  } else {
    diffMembers('/metadata', before.metadata ?? {}, after.metadata ?? {}, ops);
  }
  diffMembers('/spec', before.spec as unknown as Record<string, unknown>, after.spec as unknown as Record<string, unknown>, ops);
  return ops;
}

function diffMembers(base: string, a: Record<string, unknown>, b: Record<string, unknown>, ops: JsonPatchOp[]): void {
  for (const [k, v] of Object.entries(b)) {
    if (!Object.hasOwn(a, k)) ops.push({ op: 'add', path: `${base}/${escapePointer(k)}`, value: v });
    else if (JSON.stringify(a[k]) !== JSON.stringify(v)) ops.push({ op: 'replace', path: `${base}/${escapePointer(k)}`, value: v });
  }
  for (const k of Object.keys(a)) if (!Object.hasOwn(b, k)) ops.push({ op: 'remove', path: `${base}/${escapePointer(k)}` });
}

/** RFC 6901 §3: `~` -> `~0`, `/` -> `~1`. */
export function escapePointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}
