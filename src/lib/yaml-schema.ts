import { isMap, isPair, isScalar, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';

/**
 * Parses YAML text against a zod schema and reports every problem as `file:line:column`, with
 * the field path. This is the only place raw YAML becomes a typed value: callers get either a
 * validated object or a ConfigError, never a half-checked document.
 */
export function parseYamlFile<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const issues: FileIssue[] = [];
  for (const err of doc.errors) {
    const pos = lineCounter.linePos(err.pos[0]);
    issues.push({ file, line: pos.line, column: pos.col, path: '', message: firstLine(err.message) });
  }
  if (issues.length > 0) throw new ConfigError(issues);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: firstLine(String((err as Error).message)) }]);
  }
  const result = schema.safeParse(data ?? {});
  if (result.success) return result.data;

  for (const issue of result.error.issues) {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    let offset: number;
    let extraPath: string | undefined;
    if (issue.code === 'unrecognized_keys' && issue.keys.length > 0) {
      // point at the unknown key itself rather than at its parent map
      const key = issue.keys[0] as string;
      offset = keyOffset(doc.getIn(path, true), key) ?? nodeOffset(doc, path);
      extraPath = key;
    } else {
      offset = nodeOffset(doc, path);
    }
    const pos = lineCounter.linePos(offset);
    const full = extraPath === undefined ? path : [...path, extraPath];
    issues.push({ file, line: pos.line, column: pos.col, path: formatPath(full), message: issue.message });
  }
  throw new ConfigError(issues);
}

function firstLine(s: string): string {
  const nl = s.indexOf('\n');
  return nl === -1 ? s : s.slice(0, nl);
}

/** The closest existing node along `path` (a missing field is reported at its parent). */
function nodeOffset(doc: ReturnType<typeof parseDocument>, path: readonly (string | number)[]): number {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node !== undefined && node !== null && typeof node === 'object' && 'range' in node) {
      const range = (node as YamlNode).range;
      if (range) return range[0];
    }
  }
  return 0;
}

function keyOffset(parent: unknown, key: string): number | undefined {
  if (!isMap(parent)) return undefined;
  for (const item of parent.items) {
    if (isPair(item) && isScalar(item.key) && item.key.value === key && item.key.range) return item.key.range[0];
  }
  return undefined;
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}
