import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { injectManifests, NEVER_SENT } from '../../../src/inject/manifests.ts';
import { injectPod } from '../../../src/inject/pod.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';

/**
 * `ward inject` must enrol exactly the pods the cluster's webhook would inject: the API server
 * sends a pod to the injector only when one webhook's `namespaceSelector` and `objectSelector`
 * (deploy/base/webhook.yaml) match its labels, and label selectors compare values exactly. ward
 * read its label case-insensitively, so a namespace labelled `ward.dev/inject: Enabled` was
 * injected by `ward inject` and never by the webhook: the preview showed a protected pod that
 * would run without its sidecar (found in review).
 */

interface Requirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  readonly values?: readonly string[];
}
interface Webhook {
  readonly name: string;
  readonly namespaceSelector?: { readonly matchExpressions?: readonly Requirement[] };
  readonly objectSelector?: { readonly matchExpressions?: readonly Requirement[] };
}

/** Kubernetes label-selector semantics (apimachinery labels.Requirement.Matches). */
function matches(sel: { readonly matchExpressions?: readonly Requirement[] } | undefined, labels: Readonly<Record<string, string>>): boolean {
  for (const r of sel?.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.operator) {
      case 'In':
        if (!has || !(r.values ?? []).includes(v as string)) return false;
        break;
      case 'NotIn':
        if (has && (r.values ?? []).includes(v as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

const WEBHOOKS = (parse(readFileSync(new URL('../../../deploy/base/webhook.yaml', import.meta.url), 'utf8')) as { webhooks: Webhook[] }).webhooks;
const VALUES = [undefined, 'enabled', 'true', 'disabled', 'false', 'Enabled', 'TRUE', 'Disabled', 'False', 'yes'];
const settings = defaultSettings();

const labelsOf = (name: string, v: string | undefined): Record<string, string> => ({ 'kubernetes.io/metadata.name': name, ...(v === undefined ? {} : { 'ward.dev/inject': v }) });
const yamlLabels = (v: string | undefined): string => (v === undefined ? '' : `\n  labels: { ward.dev/inject: "${v}" }`);

describe('ward inject enrols what the webhook would (deploy/base/webhook.yaml selectors, exact label values)', () => {
  it('has the two webhooks this test reads', () => {
    expect(WEBHOOKS.map((w) => w.name).sort()).toEqual(['namespace.inject.ward.dev', 'object.inject.ward.dev']);
  });

  for (const ns of VALUES) {
    it(`namespace label ${JSON.stringify(ns)}: for every pod label, injected by ward inject exactly when the webhook would inject`, () => {
      for (const podLabel of VALUES) {
        const nsLabels = labelsOf('shop', ns);
        const podLabels = podLabel === undefined ? {} : { 'ward.dev/inject': podLabel };
        const called = WEBHOOKS.some((w) => matches(w.namespaceSelector, nsLabels) && matches(w.objectSelector, podLabels));
        // the injector is told the namespace is enrolled exactly as its namespaceSelector says
        const enrolled = matches(WEBHOOKS.find((w) => w.name === 'namespace.inject.ward.dev')?.namespaceSelector, nsLabels);
        const template = { metadata: { labels: podLabels }, spec: { containers: [{ name: 'app', image: 'x' }] } };
        const inCluster = called ? injectPod(template, { namespaceEnabled: enrolled, workloadName: 'p' }, settings).kind : 'not sent to the injector';

        const input = `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop${yamlLabels(ns)}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: shop${yamlLabels(podLabel)}\nspec:\n  containers: [{ name: app, image: x }]\n`;
        const previewed = injectManifests(input, 'in.yaml', settings, { all: false, defaultNamespace: 'default' }).reports.find((r) => r.ref === 'Pod/shop/p')?.outcome;
        expect({ ns, podLabel, injected: previewed === 'injected' }).toEqual({ ns, podLabel, injected: inCluster === 'injected' });
      }
    });
  }

  it('the namespaces neither webhook is sent are never injected by ward inject either, whatever their labels (regression: kube-system pods were)', () => {
    const excluded = WEBHOOKS.map((w) => new Set(w.namespaceSelector?.matchExpressions?.find((r) => r.key === 'kubernetes.io/metadata.name' && r.operator === 'NotIn')?.values ?? []));
    for (const set of excluded) expect([...set].sort()).toEqual([...NEVER_SENT].sort());
    for (const ns of NEVER_SENT) {
      const input = `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ns}\n  labels: { ward.dev/inject: enabled }\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ${ns}\n  labels: { ward.dev/inject: enabled }\nspec:\n  containers: [{ name: app, image: x }]\n`;
      for (const all of [false, true]) {
        const report = injectManifests(input, 'in.yaml', settings, { all, defaultNamespace: 'default' }).reports.find((r) => r.ref === `Pod/${ns}/p`);
        expect(report?.outcome, `${ns} all=${all}`).toBe('skipped');
      }
    }
  });

  it('a namespace label that is not exactly one of the four values is reported (ward inject exits 1), not read as enrolled', () => {
    const r = injectManifests('apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: { ward.dev/inject: Enabled }\n', 'in.yaml', settings, { all: false, defaultNamespace: 'default' });
    expect(r.reports).toEqual([{ ref: 'Namespace/shop', outcome: 'refused', detail: expect.stringContaining("label ward.dev/inject: 'Enabled' is not one of enabled, disabled, true, false (label values are matched exactly") }]);
  });
});
