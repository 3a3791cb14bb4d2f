import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { outboundConfigSchema } from '../../../src/config/outbound.ts';
import { ERROR_TABLE } from '../../../src/errors/table.ts';
import { formatDefault, schemaOptions } from '../../support/schema-docs.ts';

/** docs/outbound.md's option table lists every `outbound` option with its default, and nothing else. */

describe('docs/outbound.md', () => {
  const doc = readFileSync(new URL('../../../docs/outbound.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('| Option | Default | Meaning |'), doc.indexOf('## The token request'));
  const rows = new Map(
    section
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => [/^\| `([^`]+)`/.exec(l)?.[1] ?? '', l]),
  );
  const options = schemaOptions(outboundConfigSchema);

  it('documents every option with its default', () => {
    expect(options.length).toBeGreaterThan(20);
    for (const o of options) {
      const row = rows.get(o.path);
      expect(row, `${o.path} is missing from the option table`).toBeDefined();
      if (o.schema.default !== undefined) expect(row, o.path).toContain(`| ${formatDefault(o.schema.default)} |`);
      expect(o.schema.description, `${o.path} has no description`).toBeTruthy();
    }
  });

  it('documents no option that does not exist', () => {
    const known = new Set(options.map((o) => o.path));
    for (const [path] of rows) expect(known.has(path), path).toBe(true);
  });

  it('states the HTTP status and gRPC status of the outbound codes as the error table does', () => {
    const grpcName: Record<number, string> = { 7: 'PERMISSION_DENIED', 14: 'UNAVAILABLE', 16: 'UNAUTHENTICATED' };
    for (const code of ['ERR_DESTINATION_UNKNOWN', 'ERR_EXCHANGE_REFUSED', 'ERR_EXCHANGE_UNAVAILABLE', 'ERR_TOKEN_MISSING'] as const) {
      const line = doc.split('\n').find((l) => l.includes(`| \`${code}\` |`));
      expect(line, code).toBeDefined();
      const row = ERROR_TABLE[code];
      expect(line?.trimEnd().endsWith(`| ${row.http} / ${grpcName[row.grpc]} |`), code).toBe(true);
    }
  });
});
