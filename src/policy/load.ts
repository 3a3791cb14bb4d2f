import { readFileSync } from 'node:fs';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';
import { parseYamlFile } from '../lib/yaml-schema.ts';
import { compilePolicy } from './compile.ts';
import { createYamlLocator } from '../lib/yaml-locate.ts';
import type { CompiledPolicy } from './model.ts';
import { policySchema, type PolicyFile } from './schema.ts';
import { checkPolicy, policyAdvice } from './semantic.ts';

/**
 * Policy file -> CompiledPolicy, or a ConfigError listing every problem as
 * `file:line:column: field.path: message`. Three passes, each only on what the previous one
 * accepted: YAML + schema (lib/yaml-schema.ts), semantic checks (semantic.ts), compilation
 * (compile.ts, which resolves HMAC secrets).
 */

export interface LoadOptions {
  /** Refuse a policy for another service (the sidecar passes its own `service`). */
  readonly service?: string;
  /** Where `hmacSecretEnv` is read (default: the process environment). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Reads the files the policy references (compile.ts `CompileOptions.readFile`). */
  readonly readFile?: (file: string) => Uint8Array;
}

export function loadPolicyFile(file: string, opts: LoadOptions = {}): CompiledPolicy {
  return parsePolicyText(readPolicyText(file), file, opts);
}

export function readPolicyText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }]);
  }
}

const OTHER_SERVICE = 'policy is for service';

/** Whether `err` refused a policy because it names another service than `LoadOptions.service`. */
export function isOtherServiceError(err: unknown): boolean {
  return err instanceof ConfigError && err.issues.some((i) => i.path === 'service' && i.message.startsWith(OTHER_SERVICE));
}

/** Validates without compiling: the parsed file (defaults applied) or a ConfigError. */
export function validatePolicyText(text: string, file: string, opts: Pick<LoadOptions, 'service'> = {}): PolicyFile {
  const parsed = parseYamlFile(text, file, policySchema);
  const locator = createYamlLocator(text, file);
  const issues = checkPolicy(parsed, locator);
  if (opts.service !== undefined && parsed.service !== opts.service) {
    issues.unshift(locator.issue(['service'], `${OTHER_SERVICE} "${parsed.service}" but this sidecar guards "${opts.service}"`));
  }
  if (issues.length > 0) throw new ConfigError(issues.sort((a, b) => a.line - b.line || a.column - b.column));
  return parsed;
}

/** Advice on a policy that validates (semantic.ts `policyAdvice`): none is an error. */
export function policyAdviceFor(text: string, file: string): FileIssue[] {
  return policyAdvice(validatePolicyText(text, file), createYamlLocator(text, file));
}

export function parsePolicyText(text: string, file: string, opts: LoadOptions = {}): CompiledPolicy {
  return compileValidated(validatePolicyText(text, file, opts), text, file, opts);
}

/** The last pass alone, for a caller that validated `text` already (policy/source.ts). */
export function compileValidated(parsed: PolicyFile, text: string, file: string, opts: LoadOptions = {}): CompiledPolicy {
  return compilePolicy(parsed, file, {
    locator: createYamlLocator(text, file),
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.readFile === undefined ? {} : { readFile: opts.readFile }),
  });
}
