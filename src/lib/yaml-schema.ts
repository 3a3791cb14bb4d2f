import { LineCounter, parseDocument } from 'yaml';
import type { output, Schema } from './schema.ts';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';
import { formatPath, keyOffset, nodeOffset, withoutBom } from './yaml-locate.ts';

export { formatPath };

/**
 * Parses YAML text against a schema (lib/schema.ts) and reports every problem as
 * `file:line:column`, with the field path. This is the only place raw YAML becomes a typed value:
 * callers get either a validated object or a ConfigError, never a half-checked document.
 */
export function parseYamlFile<S extends Schema>(text: string, file: string, schema: S): output<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(withoutBom(text), { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const issues: FileIssue[] = [];
  // Warnings too: the library's warnings are readings it is unsure of, and it goes on with a
  // guess. An explicit tag it cannot resolve (`!!bool yes`, which is YAML 1.1; `!!float 1`, a
  // local `!level`) becomes the plain string, so `equals: !!bool yes` compared a claim with the
  // string "yes" and a deny rule written with it never fired (found in review). A file is
  // either read as written or refused.
  for (const err of [...doc.errors, ...doc.warnings]) {
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
  const deep = tooDeep(data, MAX_DEPTH);
  if (deep !== null) {
    const pos = lineCounter.linePos(nodeOffset(doc, deep));
    throw new ConfigError([{ file, line: pos.line, column: pos.col, path: formatPath(deep), message: `nested more than ${MAX_DEPTH} levels deep` }]);
  }
  let result: ReturnType<S['safeParse']>;
  try {
    result = schema.safeParse(data ?? {}) as ReturnType<S['safeParse']>;
  } catch (err) {
    // Not expected past the depth check; still a refused file, never a crash.
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `could not be checked: ${firstLine(String((err as Error).message))}` }]);
  }
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

/**
 * How deep a document may nest. The schema checks (and the policy compiler after them) recurse
 * per level, and ~700 levels of `any:` overflowed the stack: a crash on reload (found in
 * review). No configuration ward reads needs more than a dozen.
 */
export const MAX_DEPTH = 64;

/** The path of the first value nested deeper than `max` collections, or null. Iterative: it must not overflow itself. */
function tooDeep(data: unknown, max: number): (string | number)[] | null {
  const stack: { v: unknown; path: (string | number)[] }[] = [{ v: data, path: [] }];
  while (stack.length > 0) {
    const { v, path } = stack.pop() as { v: unknown; path: (string | number)[] };
    if (v === null || typeof v !== 'object') continue;
    if (path.length >= max) return path;
    if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, path: [...path, i] }));
    else for (const [k, x] of Object.entries(v)) stack.push({ v: x, path: [...path, k] });
  }
  return null;
}

function firstLine(s: string): string {
  const nl = s.indexOf('\n');
  return nl === -1 ? s : s.slice(0, nl);
}
