import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, type FileIssue } from '../errors/ward-error.ts';
import { formatPath } from '../lib/yaml-schema.ts';
import type { CompiledCondition, Scalar } from './conditions.ts';
import type { FieldPath, YamlLocator } from '../lib/yaml-locate.ts';
import type { AllowDecision, CompiledPolicy, DenyDecision, DryRunDenial, IssuerTrust, Verdict } from './model.ts';
import { compileGlob, type GlobSegment } from './paths.ts';
import { buildIndex, type PathMatcher, type RouteIndex, type RouteMatcher } from './routes.ts';
import type { PolicyCondition, PolicyFile, PolicyIssuer, PolicyRule } from './schema.ts';

/**
 * Turns a validated policy file into the immutable structure `evaluate()` runs on. Everything
 * that can be decided ahead of time is: route indexes, value sets, glob segments, and the
 * decisions themselves (a rule's allow or deny decision is the same object for every call).
 */

export interface CompiledRule {
  readonly name: string;
  readonly action: 'allow' | 'deny';
  readonly dryRun: boolean;
  /** Allow rules: a call without a token cannot match (token: required). */
  readonly tokenRequired: boolean;
  readonly routes: readonly RouteMatcher[];
  readonly conditions: readonly CompiledCondition[];
  /** `"rule \"name\""`, the prefix of every reason about this rule. */
  readonly label: string;
}

export interface CompiledAllowRule extends CompiledRule {
  readonly action: 'allow';
  /** The decision when this rule admits a call and nothing ran in dry-run. */
  readonly allowDecision: AllowDecision;
  readonly tokenMissing: DenyDecision;
}

export interface CompiledDenyRule extends CompiledRule {
  readonly action: 'deny';
  readonly denyVerdict: Verdict & { readonly permit: null };
  readonly dryRunDenial: DryRunDenial;
}

/** What evaluate() needs beyond the public CompiledPolicy fields. */
export interface PolicyProgram {
  readonly allowRules: readonly CompiledAllowRule[];
  readonly denyRules: readonly CompiledDenyRule[];
  readonly allowIndex: RouteIndex;
  readonly denyIndex: RouteIndex;
  /** Routes of the allow rules with `signIn: browser` (null when there are none). */
  readonly signInIndex: RouteIndex | null;
  /** Denial when no allow rule's route matches. */
  readonly noMatch: Verdict & { readonly permit: null };
}

/** Rule name carried by an allow decision that only a dry-run policy (mode: dry-run) produced. */
export const DRY_RUN_RULE = '(dry-run)';

export const PROGRAM: unique symbol = Symbol('ward.policy.program');
const REFERENCES: unique symbol = Symbol('ward.policy.references');
export interface CompiledPolicyInternal extends CompiledPolicy {
  readonly rules: readonly CompiledRule[];
  readonly [PROGRAM]: PolicyProgram;
  readonly [REFERENCES]: readonly ReadReference[];
}

export function programOf(p: CompiledPolicy): PolicyProgram | undefined {
  return (p as Partial<CompiledPolicyInternal>)[PROGRAM];
}

/**
 * A file a policy names and whose content goes into the compiled policy (today only
 * `hmacSecretFile`). The policy watches (policy/source.ts, controlplane/client/watch.ts) watch
 * these too and compile again when one changes: a rotated secret takes effect without a change of
 * the policy text. Another kind of referenced file is one more `kind` here and in `referencedFiles`.
 */
export interface ReferencedFile {
  readonly kind: 'hmacSecretFile';
  /** Absolute path. */
  readonly file: string;
  /** The field that names it, for errors. */
  readonly at: FieldPath;
}

/** A referenced file as a compiled policy read it: `digest` tells two reads apart, nothing more. */
interface ReadReference extends ReferencedFile {
  readonly digest: string;
}

/**
 * Key of the digests of referenced files, new in every process. A plain hash of a secret of low
 * entropy could be brute-forced offline by whoever sees it; keyed with a value that never leaves
 * the process, a digest only says "same bytes or not", and only within this process (which is
 * all it is for: comparing two compilations). Digests are never logged nor sent anyway.
 */
const DIGEST_KEY = randomBytes(32);

export function referenceDigest(bytes: Uint8Array): string {
  return createHmac('sha256', DIGEST_KEY).update(bytes).digest('base64url');
}

/** The files `parsed` references, resolved as `compilePolicy` resolves them. */
export function referencedFiles(parsed: PolicyFile, source: string, baseDir?: string): ReferencedFile[] {
  const base = baseDir ?? dirname(resolve(source));
  const out: ReferencedFile[] = [];
  parsed.issuers.forEach((iss, i) => {
    if (iss.hmacSecretFile !== undefined) out.push({ kind: 'hmacSecretFile', file: resolve(base, iss.hmacSecretFile), at: ['issuers', i, 'hmacSecretFile'] });
  });
  return out;
}

/** The referenced files a compiled policy was built from (none for a policy not built here). */
export function referencesOf(p: CompiledPolicy): readonly ReferencedFile[] {
  return (p as Partial<CompiledPolicyInternal>)[REFERENCES] ?? [];
}

/**
 * The referenced files whose content differs between two compilations of the same process
 * (files `next` references that `prev` did not count as changed). Absolute paths, each once.
 */
export function changedReferences(prev: CompiledPolicy, next: CompiledPolicy): string[] {
  const before = new Map((prev as Partial<CompiledPolicyInternal>)[REFERENCES]?.map((r) => [`${r.kind}\u0000${r.file}`, r.digest]));
  const out = new Set<string>();
  for (const r of (next as Partial<CompiledPolicyInternal>)[REFERENCES] ?? []) {
    if (before.get(`${r.kind}\u0000${r.file}`) !== r.digest) out.add(r.file);
  }
  return [...out];
}

export interface CompileOptions {
  /** Where `hmacSecretEnv` is read. Defaults to the process environment. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Base directory of `hmacSecretFile` (default: the directory of `source`). */
  readonly baseDir?: string;
  /** Positions for errors found while compiling (unreadable secret files). */
  readonly locator?: YamlLocator;
  /**
   * Reads a referenced file (default `readFileSync`); throws as it does. The file policy source
   * passes the bytes it has just read, so that what it compared is what gets compiled.
   */
  readonly readFile?: (file: string) => Uint8Array;
}

/**
 * Shortest HMAC key per algorithm: RFC 7518 §3.2 asks for a key at least as long as the hash
 * output. One secret serves every HS algorithm an issuer allows, so the longest hash decides.
 */
const MIN_HMAC_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 };

export function compilePolicy(parsed: PolicyFile, source: string, opts: CompileOptions = {}): CompiledPolicy {
  const version = policyVersion(parsed);
  const issues: FileIssue[] = [];
  const issueAt = (path: FieldPath, message: string): void => {
    issues.push(opts.locator?.issue(path, message) ?? { file: source, line: 1, column: 1, path: formatPath(path), message });
  };
  const refs: ReadReference[] = [];
  const issuers = parsed.issuers.map((iss, i) => compileIssuer(iss, i, source, opts, issueAt, refs));
  if (issues.length > 0) throw new ConfigError(issues);

  const rules: CompiledRule[] = [];
  const allowRules: CompiledAllowRule[] = [];
  const denyRules: CompiledDenyRule[] = [];
  const signInRules: CompiledAllowRule[] = [];
  for (const r of parsed.rules) {
    const base = compileRule(r);
    if (r.action === 'allow') {
      const rule: CompiledAllowRule = deepFreeze({
        ...base,
        action: 'allow',
        allowDecision: { kind: 'allow', rule: r.name, reason: `${base.label}: allowed`, policyVersion: version, dryRunDenial: undefined },
        tokenMissing: { kind: 'deny', code: 'ERR_TOKEN_MISSING', rule: r.name, reason: `${base.label}: requires a token`, policyVersion: version },
      });
      allowRules.push(rule);
      if (r.signIn === 'browser') signInRules.push(rule);
      rules.push(rule);
    } else {
      const rule: CompiledDenyRule = deepFreeze({
        ...base,
        action: 'deny',
        denyVerdict: {
          decision: { kind: 'deny', code: 'ERR_POLICY_DENIED', rule: r.name, reason: `${base.label}: deny rule matched`, policyVersion: version },
          permit: null,
        },
        dryRunDenial: { code: 'ERR_POLICY_DENIED', rule: r.name, reason: `${base.label}: deny rule matched (dry-run)` },
      });
      denyRules.push(rule);
      rules.push(rule);
    }
  }

  const program: PolicyProgram = Object.freeze({
    allowRules: Object.freeze(allowRules),
    denyRules: Object.freeze(denyRules),
    allowIndex: buildIndex(allowRules),
    denyIndex: buildIndex(denyRules),
    signInIndex: signInRules.length === 0 ? null : buildIndex(signInRules),
    noMatch: deepFreeze<PolicyProgram['noMatch']>({
      decision: { kind: 'deny', code: 'ERR_POLICY_NO_MATCH', rule: null, reason: 'no allow rule matches this route', policyVersion: version },
      permit: null,
    }),
  });
  const policy: CompiledPolicyInternal = {
    service: parsed.service,
    version,
    source,
    issuers: deepFreeze(issuers),
    dryRun: parsed.mode === 'dry-run',
    rules: Object.freeze(rules),
    [PROGRAM]: program,
    [REFERENCES]: deepFreeze(refs),
  };
  return Object.freeze(policy);
}

function compileIssuer(
  iss: PolicyIssuer,
  i: number,
  source: string,
  opts: CompileOptions,
  issueAt: (path: FieldPath, message: string) => void,
  refs: ReadReference[],
): IssuerTrust {
  let hmacSecret: Uint8Array | undefined;
  if (iss.hmacSecretFile !== undefined) {
    const file = resolve(opts.baseDir ?? dirname(resolve(source)), iss.hmacSecretFile);
    try {
      const bytes = (opts.readFile ?? readFileSync)(file);
      refs.push({ kind: 'hmacSecretFile', file, at: ['issuers', i, 'hmacSecretFile'], digest: referenceDigest(bytes) });
      // Trailing newlines are an artefact of how secret files are written, not part of the key.
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1').replace(/[\r\n]+$/, '');
      hmacSecret = Buffer.from(text, 'latin1');
    } catch (err) {
      issueAt(['issuers', i, 'hmacSecretFile'], `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  } else if (iss.hmacSecretEnv !== undefined) {
    // The one environment read of the policy stage: a secret named by the policy file. Callers
    // (config/, tests) may pass `env` explicitly.
    const value = (opts.env ?? process.env)[iss.hmacSecretEnv];
    // Trailing newlines dropped, as from the file: a Secret made with `--from-file` carries the
    // file's into the variable, and the key would differ from the IdP's by it (found in review).
    const key = value?.replace(/[\r\n]+$/, '');
    if (key === undefined || key === '') issueAt(['issuers', i, 'hmacSecretEnv'], `environment variable ${iss.hmacSecretEnv} is not set`);
    else hmacSecret = Buffer.from(key, 'utf8');
  }
  let need = MIN_HMAC_BYTES['HS256'] as number;
  let needFor = 'HS256';
  for (const a of iss.algorithms) {
    const n = MIN_HMAC_BYTES[a];
    if (n !== undefined && n > need) [need, needFor] = [n, a];
  }
  if (hmacSecret !== undefined && hmacSecret.length < need) {
    const field = iss.hmacSecretFile !== undefined ? 'hmacSecretFile' : 'hmacSecretEnv';
    issueAt(['issuers', i, field], `HMAC secret is ${hmacSecret.length} bytes; ${needFor} needs at least ${need} (RFC 7518 §3.2: as long as the hash)`);
    hmacSecret = undefined;
  }
  return {
    issuer: iss.issuer,
    audiences: [...iss.audiences],
    jwksUri: iss.jwksUri,
    discovery: iss.discovery,
    algorithms: [...iss.algorithms],
    requireAtJwtType: iss.requireAtJwtType,
    hmacSecret: hmacSecret === undefined ? undefined : new Uint8Array(hmacSecret),
    introspection: iss.introspection,
    requireIntrospectedAudience: iss.requireIntrospectedAudience,
    requiredClaims: [...iss.requiredClaims],
  };
}

function compileRule(r: PolicyRule): CompiledRule {
  const routes: RouteMatcher[] = [];
  for (const m of r.match.grpc ?? []) {
    routes.push(m.endsWith('/*') ? { kind: 'grpc-service', service: m.slice(1, -2) } : { kind: 'grpc', method: m });
  }
  for (const h of r.match.http ?? []) {
    routes.push({ kind: 'http', methods: h.methods === undefined ? null : new Set(h.methods), path: compilePath(h) });
  }
  return {
    name: r.name,
    action: r.action,
    dryRun: r.dryRun,
    tokenRequired: r.token === 'required',
    routes,
    conditions: r.when.map(compileCondition),
    label: `rule ${JSON.stringify(r.name)}`,
  };
}

function compilePath(h: NonNullable<PolicyRule['match']['http']>[number]): PathMatcher {
  if (h.exact !== undefined) return { kind: 'exact', value: h.exact };
  if (h.prefix !== undefined) return { kind: 'prefix', value: h.prefix };
  const glob = h.glob ?? '';
  const g = compileGlob(glob);
  // semantic.ts refused invalid globs; one that still fails here matches nothing (fail closed):
  // no normalized path has a NUL segment.
  const segments: readonly GlobSegment[] = 'segments' in g ? g.segments : ['\u0000'];
  return { kind: 'glob', value: glob, segments };
}

function isScopeClaim(path: readonly string[]): boolean {
  return path.length === 1 && (path[0] === 'scope' || path[0] === 'scp');
}

export function compileCondition(c: PolicyCondition): CompiledCondition {
  if (c.claim !== undefined) {
    const path = typeof c.claim === 'string' ? c.claim.split('.') : [...c.claim];
    return {
      kind: 'claim',
      path,
      label: typeof c.claim === 'string' ? c.claim : JSON.stringify(c.claim),
      hasEquals: c.equals !== undefined,
      equals: c.equals,
      in: c.in === undefined ? undefined : new Set<Scalar>(c.in),
      inList: c.in,
      anyOf: c.anyOf,
      allOf: c.allOf,
      exists: c.exists,
      gt: c.gt,
      gte: c.gte,
      lt: c.lt,
      lte: c.lte,
      scope: isScopeClaim(path) && (c.anyOf !== undefined || c.allOf !== undefined || c.equals !== undefined || c.in !== undefined),
    };
  }
  if (c.scopes !== undefined) return { kind: 'scopes', anyOf: c.scopes.anyOf, allOf: c.scopes.allOf, scope: true };
  if (c.issuer !== undefined) return { kind: 'issuer', values: new Set(c.issuer.in), list: c.issuer.in, scope: false };
  if (c.subject !== undefined) return { kind: 'subject', values: new Set(c.subject.in), list: c.subject.in, scope: false };
  if (c.actor !== undefined) return { kind: 'actor', values: new Set(c.actor.anyOf), list: c.actor.anyOf, scope: false };
  if (c.via !== undefined) {
    return { kind: 'via', anyOf: c.via.anyOf === undefined ? undefined : new Set(c.via.anyOf), allOf: c.via.allOf, scope: false };
  }
  if (c.delegated !== undefined) return { kind: 'delegated', value: c.delegated, scope: false };
  if (c.maxDepth !== undefined) return { kind: 'maxDepth', value: c.maxDepth, scope: false };
  if (c.any !== undefined) {
    const conditions = c.any.map(compileCondition);
    return { kind: 'any', conditions, scope: conditions.every((x) => x.scope) };
  }
  // semantic.ts refused conditions with no subject; one that reaches here never holds (fail closed)
  return { kind: 'any', conditions: [], scope: false };
}

/**
 * The policy's version: sha256 of its canonical JSON (keys sorted, defaults applied), so the
 * same content gives the same version on every replica whatever the key order, comments or
 * spelled-out defaults of the file.
 */
export function policyVersion(parsed: PolicyFile): string {
  return createHash('sha256').update(canonicalJson(parsed)).digest('hex');
}

export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x === undefined ? null : x)).join(',')}]`;
  const keys = Object.keys(v)
    .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o) && !ArrayBuffer.isView(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
