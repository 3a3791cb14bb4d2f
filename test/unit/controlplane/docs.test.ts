import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { controlPlaneConfigSchema } from '../../../src/controlplane/server/config.ts';

/** docs/control-plane.md's config table must list every option with its default. */

type Json = { properties?: Record<string, Json>; items?: Json; default?: unknown; description?: string };

function leaves(s: Json, prefix: string, out: { path: string; schema: Json }[]): void {
  for (const [k, v] of Object.entries(s.properties ?? {})) {
    const path = `${prefix}${k}`;
    if (v.properties !== undefined) leaves(v, `${path}.`, out);
    else if (v.items?.properties !== undefined) leaves(v.items, `${path}[].`, out);
    else out.push({ path, schema: v });
  }
}

function formatDefault(v: unknown): string {
  if (Array.isArray(v)) return `\`[${v.join(', ')}]\``;
  if (typeof v === 'object' && v !== null) return `\`${JSON.stringify(v)}\``;
  return `\`${String(v)}\``;
}

describe('docs/control-plane.md', () => {
  const doc = readFileSync(new URL('../../../docs/control-plane.md', import.meta.url), 'utf8');
  const rows = new Map(
    doc
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => [/^\| `([^`]+)`/.exec(l)?.[1] ?? '', l]),
  );
  const options: { path: string; schema: Json }[] = [];
  leaves(z.toJSONSchema(controlPlaneConfigSchema, { io: 'input' }) as Json, '', options);

  it('documents every config option, with its default', () => {
    expect(options.length).toBeGreaterThan(20);
    for (const o of options) {
      const row = rows.get(o.path);
      expect(row, `${o.path} is missing from the config table`).toBeDefined();
      if (o.schema.default !== undefined) expect(row, o.path).toContain(`| ${formatDefault(o.schema.default)} |`);
      expect(o.schema.description, `${o.path} has no description`).toBeTruthy();
    }
  });

  it('documents no option that does not exist', () => {
    const known = new Set(options.map((o) => o.path));
    const table = doc.slice(doc.indexOf('## Config reference'));
    for (const [path] of rows) if (table.includes(`| \`${path}\` |`)) expect(known.has(path), path).toBe(true);
  });
});
