import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SETTINGS_FLAGS } from '../../../src/cli/inject.ts';
import { ANNOTATIONS } from '../../../src/inject/annotations.ts';
import { captureRules } from '../../../src/inject/capture.ts';
import { defaultSettings } from '../../../src/inject/settings.ts';
import { validatePolicyText } from '../../../src/policy/load.ts';

/** docs/kubernetes.md and docs/policy-guide.md cannot drift from the code they describe. */

const DOCS = fileURLToPath(new URL('../../../docs/', import.meta.url));
const kubernetes = readFileSync(join(DOCS, 'kubernetes.md'), 'utf8');
const guide = readFileSync(join(DOCS, 'policy-guide.md'), 'utf8');

/** Fenced code blocks with the given info string ('' for a bare fence). */
function codeBlocks(md: string, lang: string): string[] {
  const out: string[] = [];
  let current: string[] | null = null;
  let currentLang = '';
  for (const line of md.split('\n')) {
    if (current === null && line.startsWith('```')) {
      current = [];
      currentLang = line.slice(3).trim();
    } else if (current !== null && line.startsWith('```')) {
      if (currentLang === lang) out.push(`${current.join('\n')}\n`);
      current = null;
    } else if (current !== null) {
      current.push(line);
    }
  }
  return out;
}

describe('docs/kubernetes.md', () => {
  it('documents every annotation the injector reads, and no other', () => {
    const documented = [...kubernetes.matchAll(/^\| `(ward\.dev\/[a-z-]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(ANNOTATIONS.map((a) => a.name).sort());
  });

  it('documents every injector flag', () => {
    for (const flag of Object.keys(SETTINGS_FLAGS)) expect(kubernetes).toContain(`--${flag}`);
  });

  it('shows the capture rules exactly as ward capture generates them with the injector defaults', () => {
    const s = defaultSettings();
    const rules = captureRules(
      { inboundPort: s.inboundPort, outboundPort: s.outboundPort, proxyUid: s.proxyUid, proxyGid: s.proxyGid, inboundPorts: '*', excludeInboundPorts: [s.adminPort], excludeOutboundPorts: s.excludeOutboundPorts, excludeOutboundCidrs: [] },
      'ipv4',
    );
    expect(codeBlocks(kubernetes, '')).toContain(rules);
  });
});

describe('docs/policy-guide.md', () => {
  it('holds only policies that pass ward policy check', () => {
    const policies = codeBlocks(guide, 'yaml').filter((b) => b.startsWith('apiVersion: ward.dev/v1'));
    expect(policies.length).toBeGreaterThanOrEqual(6);
    for (const [i, text] of policies.entries()) expect(() => validatePolicyText(text, `policy-guide.md block ${i}`)).not.toThrow();
  });
});

describe.each(['kubernetes.md', 'policy-guide.md'])('docs/%s links', (name) => {
  it('point at files that exist', () => {
    const md = readFileSync(join(DOCS, name), 'utf8');
    for (const m of md.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
      const target = m[1]!;
      if (/^https?:/.test(target)) continue;
      expect(existsSync(join(dirname(join(DOCS, name)), target)), target).toBe(true);
    }
  });
});
