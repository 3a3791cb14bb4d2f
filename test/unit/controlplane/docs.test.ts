import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { controlPlaneConfigSchema } from '../../../src/controlplane/server/config.ts';
import { formatDefault, schemaOptions } from '../../support/schema-docs.ts';

/** docs/control-plane.md's config table must list every option with its default. */

describe('docs/control-plane.md', () => {
  const doc = readFileSync(new URL('../../../docs/control-plane.md', import.meta.url), 'utf8');
  const rows = new Map(
    doc
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => [/^\| `([^`]+)`/.exec(l)?.[1] ?? '', l]),
  );
  const options = schemaOptions(controlPlaneConfigSchema);

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
