import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * V8 keeps the source text of every module a process loaded in its heap for the life of the
 * process, as a one-byte string when every character is Latin-1 and as a two-byte string (twice
 * the memory) as soon as one is not. Two characters beyond Latin-1 in comments (a dash, an arrow)
 * made 61 of the modules under src/ two-byte: ~0.7 MB more heap in every process. So comments use
 * ASCII (`->`, `...`, `-`), and string literals spell such characters as escapes (`\u2026`).
 */
describe('the source text of ward\'s modules', () => {
  it('is Latin-1 throughout src/ and bin/, so V8 holds it one byte per character', () => {
    const offenders: string[] = [];
    for (const dir of ['src', 'bin']) {
      const root = new URL(`../../${dir}/`, import.meta.url);
      for (const f of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
        if (!/\.(ts|js)$/.test(f)) continue;
        const lines = readFileSync(new URL(f, root), 'utf8').split('\n');
        lines.forEach((line, i) => {
          const c = [...line].find((ch) => (ch.codePointAt(0) ?? 0) > 0xff);
          if (c !== undefined) offenders.push(`${dir}/${f}:${i + 1}: '${c}' (U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')})`);
        });
      }
    }
    expect(offenders).toEqual([]);
  });
});
