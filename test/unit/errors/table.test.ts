import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../../src/errors/codes.ts';
import { ERROR_TABLE } from '../../../src/errors/table.ts';

describe('error table', () => {
  it('has a row for every code and nothing else', () => {
    expect(Object.keys(ERROR_TABLE).sort()).toEqual([...ERROR_CODES].sort());
  });

  it('maps HTTP statuses to the gRPC statuses gRPC clients expect', () => {
    for (const row of Object.values(ERROR_TABLE)) {
      if (row.http === 401) expect(row.grpc).toBe(16);
      if (row.http === 403) expect(row.grpc).toBe(7);
      if (row.http === 503) expect(row.grpc).toBe(14);
      // a challenge only ever accompanies an authentication or scope failure
      if (row.challenge !== 'none') expect([400, 401, 403]).toContain(row.http);
    }
  });

  it('is documented row by row in docs/reason-codes.md', () => {
    const doc = readFileSync(new URL('../../../docs/reason-codes.md', import.meta.url), 'utf8');
    for (const [code, row] of Object.entries(ERROR_TABLE)) {
      const line = doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
      expect(line, code).toBeDefined();
      const cells = (line ?? '').split('|').map((c) => c.trim());
      expect(cells[2], code).toBe(String(row.http));
      expect(cells[3], code).toBe(String(row.grpc));
      expect(cells[5], code).toBe(row.message);
    }
  });
});
