import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { FileIssue } from '../errors/ward-error.ts';

/**
 * Maps a field path of an already-validated YAML file back to its line and column, so checks
 * that run after the schema (semantic.ts, compile.ts) report errors exactly as the schema does:
 * `file:line:column: field.path: message`. It keeps the yaml Document and its LineCounter, the
 * same helpers as yaml-schema.ts, without re-validating anything.
 */
export type FieldPath = readonly (string | number)[];

export interface YamlLocator {
  readonly file: string;
  /** Position of the node at `path`, or of its closest existing ancestor (a missing field is reported at its parent). */
  position(path: FieldPath): { line: number; column: number };
  /** Whether the file spells out `path` (false for a field the schema filled with its default). */
  has(path: FieldPath): boolean;
  /** A FileIssue at `path`; `at: 'key'` points at the last segment's key instead of its value. */
  issue(path: FieldPath, message: string, at?: 'value' | 'key'): FileIssue;
  /** The text the file spells the scalar at `path` with (undefined for anything else). */
  source(path: FieldPath): string | undefined;
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/**
 * A FileIssue at `path` of `file`: where the file spells it when its locator is at hand (a config
 * parsed from text), else at 1:1 (a config built in code has no positions). Checks that run after
 * parsing (a secret that is unset, a referenced file that cannot be read) report through this.
 */
export function issueAt(locator: YamlLocator | undefined, file: string, path: FieldPath, message: string, at?: 'value' | 'key'): FileIssue {
  return locator?.issue(path, message, at) ?? { file, line: 1, column: 1, path: formatPath(path), message };
}

/**
 * The text without a leading UTF-8 byte order mark. YAML allows one, and editors do not show it
 * as a column; left in, it put every position on line 1 one column late (found in review).
 */
export function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

export function createYamlLocator(text: string, file: string): YamlLocator {
  const lineCounter = new LineCounter();
  // The text already parsed cleanly once (parseYamlFile); parse errors cannot happen here, and if
  // they did the positions would still be the best available.
  const doc = parseDocument(withoutBom(text), { lineCounter, uniqueKeys: true, prettyErrors: false });
  const offsetOf = (path: FieldPath, at: 'value' | 'key'): number => {
    if (at === 'key' && path.length > 0) {
      const last = path[path.length - 1];
      if (typeof last === 'string') {
        const off = keyOffset(doc.getIn(path.slice(0, -1), true), last);
        if (off !== undefined) return off;
      }
    }
    return nodeOffset(doc, path);
  };
  const position = (path: FieldPath, at: 'value' | 'key' = 'value'): { line: number; column: number } => {
    const pos = lineCounter.linePos(offsetOf(path, at));
    return { line: pos.line, column: pos.col };
  };
  return {
    file,
    position: (path) => position(path),
    has: (path) => doc.hasIn(path),
    issue: (path, message, at = 'value') => ({ file, ...position(path, at), path: formatPath(path), message }),
    source: (path) => {
      const node: unknown = doc.getIn(path, true);
      return isScalar(node) ? node.source : undefined;
    },
  };
}

/** Offset of the node at `path`, or of its closest existing ancestor. */
export function nodeOffset(doc: Document, path: FieldPath): number {
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node !== undefined && node !== null && typeof node === 'object' && 'range' in node) {
      const range = (node as YamlNode).range;
      if (range) return range[0];
    }
  }
  return 0;
}

/** Offset of `key` itself within the map `parent`. */
export function keyOffset(parent: unknown, key: string): number | undefined {
  if (!isMap(parent)) return undefined;
  for (const item of parent.items) {
    // A key YAML reads as a number or boolean (`8080:`) is reported by its text.
    if (isPair(item) && isScalar(item.key) && String(item.key.value) === key && item.key.range) return item.key.range[0];
  }
  return undefined;
}
