import { LineCounter, parseDocument } from 'yaml';
import type { output, Schema } from './schema.ts';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';
import { formatPath, keyOffset, nodeOffset } from './yaml-locate.ts';

export { formatPath };

/**
 * Parses YAML text against a schema (lib/schema.ts) and reports every problem as
 * `file:line:column`, with the field path. This is the only place raw YAML becomes a typed value:
 * callers get either a validated object or a ConfigError, never a half-checked document.
 */
export function parseYamlFile<S extends Schema>(text: string, file: string, schema: S): output<S> {
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
  if (result.success) return result.data as output<S>;

  for (const issue of result.error.issues) {
    const path = issue.path;
    let offset: number;
    let extraPath: string | undefined;
    if (issue.code === 'unrecognized_keys' && issue.keys !== undefined && issue.keys.length > 0) {
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
