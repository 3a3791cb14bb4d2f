import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSidecarConfig } from '../../../src/config/sidecar.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';

/** The README's examples are what new users copy: they must stay valid. */
const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');

describe('README', () => {
  it('opens with the two quick-start commands', () => {
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    expect(firstBlock).toContain('npm ci && npm start');
    expect(firstBlock).toContain('npm ci && npm test');
  });

  it('has a policy example that passes the validator', () => {
    const policy = blocks.find((b) => b.includes('kind: Policy'));
    expect(policy).toBeDefined();
    const compiled = parsePolicyText(policy ?? '', 'README.md');
    expect(compiled.service).toBe('orders');
  });

  it('has a sidecar config example that passes the validator', () => {
    const cfg = blocks.find((b) => b.includes('upstream:'));
    expect(cfg).toBeDefined();
    expect(parseSidecarConfig(cfg ?? '', '/tmp/README.md').upstream.protocol).toBe('h2c');
  });
});
