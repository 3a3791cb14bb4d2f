import type { ErrorCode } from './codes.ts';

/**
 * A failure with a stable code. `detail` is for logs (never a token); the caller only ever
 * sees the code and the table's short message.
 */
export class WardError extends Error {
  readonly code: ErrorCode;
  readonly detail: string | undefined;

  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(detail === undefined ? code : `${code}: ${detail}`, options);
    this.name = 'WardError';
    this.code = code;
    this.detail = detail;
  }
}

/** A bad config or policy file: reported with file:line:column and the field path. */
export interface FileIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** Dotted field path, e.g. `rules[2].when[0].claim`; empty for the document root. */
  readonly path: string;
  readonly message: string;
}

export function formatIssue(i: FileIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path === '' ? '' : `${i.path}: `}${i.message}`;
}

/** Thrown at start-up (or refused on reload) when a file is invalid. Never thrown per request. */
export class ConfigError extends Error {
  readonly issues: readonly FileIssue[];

  constructor(issues: readonly FileIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}
