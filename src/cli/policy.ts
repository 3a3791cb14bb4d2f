import { readFileSync } from 'node:fs';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { checkTime, identityParts, isFailure } from '../authn/claims.ts';
import type { JsonObject } from '../authn/json.ts';
import { DEFAULT_CLOCK_SKEW_SECONDS } from '../config/sidecar.ts';
import type { ErrorCode } from '../errors/codes.ts';
import { ERROR_TABLE } from '../errors/table.ts';
import { ConfigError, formatIssue } from '../errors/ward-error.ts';
import { policyVersion } from '../policy/compile.ts';
import { explain, type Explanation } from '../policy/explain.ts';
import { identityFromClaims } from '../policy/identity.ts';
import { parsePolicyText, policyAdviceFor, readPolicyText, validatePolicyText } from '../policy/load.ts';
import type { CompiledPolicy, Facts, Identity, RequestFacts } from '../policy/model.ts';
import { grpcMethodOf, HTTP_METHODS, normalizeTarget, type PathOptions } from '../lib/normalize.ts';
import { type Command, parseFlags, UsageError } from './command.ts';

/**
 * `ward policy check` and `ward policy explain`: the policy author's tools. Both run the same
 * loader and evaluator as the sidecar, so "check says ok" means "the sidecar will load it" and
 * "explain says deny" means the sidecar denies (given a token that verifies).
 */

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
/** `explain`: the call would be refused. */
export const EXIT_DENY = 3;

const CHECK_HELP = `Usage: ward policy check [--skip-secrets] FILE...

Validates policy files: YAML syntax, the schema (docs/policy.md), and the semantic checks
(unique rule names, known issuers, one path matcher per route, valid globs, ...).

  FILE: ok (service S, version V, N rules)       for each valid file, on stdout
  file:line:column: field.path: message          for each problem, on stderr
  warning: file:line:column: field.path: ...      advice on a valid file, on stderr (a deny
                                                 rule for GET without HEAD); not a problem

Options:
  --skip-secrets   do not read hmacSecretFile / hmacSecretEnv (for CI without the secrets)
  -h, --help       show this help

Exit status: 0 all files valid, 1 any problem.
`;

const EXPLAIN_HELP = `Usage: ward policy explain --policy FILE [--token JWT | --claims JSON|@FILE]
                           (--grpc /pkg.Service/Method | --http 'METHOD /path') [--json]

Shows the decision the sidecar would make for one call, the rule that decided and why, and
every rule considered with the reason it did or did not apply.

Options:
  --policy FILE     the policy file
  --token JWT       an access token; decoded WITHOUT verifying its signature, expiry or audience
                    (the output says "signature not verified")
  --claims JSON     the token's claims as JSON, or @FILE to read them from a file
                    (neither --token nor --claims: a call without a token)
  --issuer URL      issuer to assume when the claims have no "iss"
  --grpc METHOD     a gRPC call, e.g. /ward.demo.v1.Orders/GetOrder
  --http 'M /path'  an HTTP request, e.g. 'GET /api/orders/42'; the path is normalized as the
                    sidecar does with its default paths settings (dot segments resolved, repeated
                    slashes merged, an escaped slash refused), the query is ignored
  --json            machine-readable output
  -h, --help        show this help

Exit status: 0 allow (including a dry-run allow that records a denial), 3 deny, 1 error.
`;

const HELP = `Usage: ward policy check FILE...
       ward policy explain --policy FILE [--token JWT | --claims JSON|@FILE] (--grpc M | --http 'M /path')

Check policy files and explain decisions. Reference: docs/policy.md

${CHECK_HELP}
${EXPLAIN_HELP}`;

export interface PolicyCommandIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  /** Milliseconds since the epoch (for the expiry note only). */
  readonly now?: () => number;
}

export function createPolicyCommand(io: PolicyCommandIo = { stdout: process.stdout, stderr: process.stderr }): Command {
  return {
    name: 'policy',
    summary: 'Check policy files and explain decisions',
    help: HELP,
    ownHelp: true,
    async run(argv) {
      const [sub, ...rest] = argv;
      if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
        io.stdout.write(HELP);
        return sub === undefined ? 2 : EXIT_OK;
      }
      if (sub === 'check') return check(rest, io);
      if (sub === 'explain') return explainCmd(rest, io);
      throw new UsageError(`unknown subcommand '${sub}' (expected check or explain)`);
    },
  };
}

export const command: Command = createPolicyCommand();

function check(argv: readonly string[], io: PolicyCommandIo): number {
  const { values, positionals } = parseFlags(argv, { 'skip-secrets': { type: 'boolean' } }, true);
  if (values.help === true) {
    io.stdout.write(CHECK_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new UsageError('check needs at least one FILE');
  let failed = false;
  for (const file of positionals) {
    try {
      const text = readPolicyText(file);
      let service: string;
      let version: string;
      let rules: number;
      if (values['skip-secrets'] === true) {
        const parsed = validatePolicyText(text, file);
        ({ service } = parsed);
        version = policyVersion(parsed);
        rules = parsed.rules.length;
      } else {
        const p = parsePolicyText(text, file);
        ({ service, version } = p);
        rules = p.rules.length;
      }
      io.stdout.write(`${file}: ok (service ${service}, version ${version}, ${rules} ${rules === 1 ? 'rule' : 'rules'})\n`);
      for (const a of policyAdviceFor(text, file)) io.stderr.write(`warning: ${formatIssue(a)}\n`);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      failed = true;
      for (const issue of err.issues) io.stderr.write(`${formatIssue(issue)}\n`);
    }
  }
  return failed ? EXIT_ERROR : EXIT_OK;
}

interface TokenInfo {
  readonly source: 'token' | 'claims' | 'none';
  readonly header: Readonly<Record<string, unknown>> | undefined;
}

function explainCmd(argv: readonly string[], io: PolicyCommandIo): number {
  const { values } = parseFlags(argv, {
    policy: { type: 'string' },
    token: { type: 'string' },
    claims: { type: 'string' },
    issuer: { type: 'string' },
    grpc: { type: 'string' },
    http: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help === true) {
    io.stdout.write(EXPLAIN_HELP);
    return EXIT_OK;
  }
  if (values.policy === undefined) throw new UsageError('explain needs --policy FILE');
  if (values.token !== undefined && values.claims !== undefined) throw new UsageError('give --token or --claims, not both');
  if ((values.grpc === undefined) === (values.http === undefined)) throw new UsageError("give exactly one of --grpc /pkg.Service/Method and --http 'METHOD /path'");

  const request = values.grpc !== undefined ? grpcRequest(values.grpc) : httpRequest(values.http as string);
  if ('refusal' in request) {
    // Refused by the sidecar's first stage, before any token or policy is looked at.
    const { code, detail } = request.refusal;
    if (values.json === true) {
      io.stdout.write(`${JSON.stringify({ outcome: 'deny', decision: { kind: 'deny', code, rule: null, reason: detail }, stage: 'request', request: request.given }, null, 2)}\n`);
    } else {
      const row = ERROR_TABLE[code];
      io.stdout.write(
        `request:  ${request.given.protocol === 'grpc' ? 'gRPC' : 'HTTP'} ${request.given.method} ${request.given.target}\n` +
          `decision: deny ${code} (HTTP ${row.http}, gRPC status ${row.grpc})\n` +
          `reason:   ${detail}: the sidecar refuses the request itself, before the token and the policy\n`,
      );
    }
    return EXIT_DENY;
  }

  let policy: CompiledPolicy;
  try {
    policy = parsePolicyText(readPolicyText(values.policy), values.policy);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) io.stderr.write(`${formatIssue(issue)}\n`);
    return EXIT_ERROR;
  }

  let claims: Record<string, unknown> | undefined;
  let info: TokenInfo = { source: 'none', header: undefined };
  if (values.token !== undefined) {
    try {
      claims = decodeJwt(values.token);
      info = { source: 'token', header: decodeProtectedHeader(values.token) };
    } catch (err) {
      throw new UsageError(`--token is not a decodable JWT (${(err as Error).message}); for opaque tokens pass the introspection response with --claims`);
    }
  } else if (values.claims !== undefined) {
    claims = readClaims(values.claims);
    info = { source: 'claims', header: undefined };
  }
  const fallbackIssuer = values.issuer ?? (policy.issuers.length === 1 ? policy.issuers[0]?.issuer : undefined);
  const identity = claims === undefined ? null : identityFromClaims(claims, fallbackIssuer);
  const facts: Facts = { identity, request };
  const now = (io.now ?? Date.now)();
  const result = explain(policy, facts, now);
  const notes = authnNotes(policy, identity, info, now);

  if (values.json === true) io.stdout.write(`${JSON.stringify(toJson(policy, facts, info, result, notes), null, 2)}\n`);
  else io.stdout.write(render(policy, facts, info, result, notes));
  return result.verdict.decision.kind === 'allow' ? EXIT_OK : EXIT_DENY;
}

/** What the sidecar's first stage makes of a request line: the facts the policy sees, or its refusal. */
type ExplainRequest = RequestFacts | { readonly refusal: { readonly code: ErrorCode; readonly detail: string }; readonly given: { readonly protocol: 'grpc' | 'http'; readonly method: string; readonly target: string } };

/**
 * The path as the sidecar judges and forwards it: normalized with the sidecar's default path
 * settings (`paths.mergeSlashes` and `paths.rejectEscapedSlashes` on), so that
 * `/public/../admin` is judged as `/admin`, as the sidecar does, and a spelling the sidecar
 * refuses is refused here too (found in review: explain matched the raw text).
 */
const SIDECAR_DEFAULT_PATHS: PathOptions = { mergeSlashes: true, rejectEscapedSlashes: true };

function grpcRequest(method: string): ExplainRequest {
  if (!/^\/[^/]+\/[^/]+$/.test(method)) throw new UsageError(`--grpc must be /package.Service/Method, got '${method}'`);
  const n = normalizeTarget(method, SIDECAR_DEFAULT_PATHS);
  if (!n.ok) return { refusal: { code: n.code, detail: n.detail }, given: { protocol: 'grpc', method: 'POST', target: method } };
  const grpcMethod = grpcMethodOf(n.path);
  if (grpcMethod === undefined) throw new UsageError(`--grpc must be /package.Service/Method, got '${method}' (normalized: '${n.path}')`);
  return { protocol: 'grpc', method: 'POST', path: n.path, grpcMethod };
}

function httpRequest(spec: string): ExplainRequest {
  const m = /^\s*([A-Za-z]+)\s+(\S+)\s*$/.exec(spec);
  if (m === null) throw new UsageError(`--http must be 'METHOD /path', got '${spec}'`);
  const method = m[1] as string;
  const target = m[2] as string;
  if (!target.startsWith('/')) throw new UsageError(`--http path must start with '/', got '${target}'`);
  const given = { protocol: 'http', method, target } as const;
  // Methods are case-sensitive (RFC 9110 §9.1): the sidecar refuses `get`, so explain does too.
  if (!(HTTP_METHODS as readonly string[]).includes(method)) {
    return { refusal: { code: 'ERR_REQUEST_INVALID', detail: `method ${method} not accepted (one of ${HTTP_METHODS.join(', ')}; methods are case-sensitive)` }, given };
  }
  const n = normalizeTarget(target, SIDECAR_DEFAULT_PATHS);
  if (!n.ok) return { refusal: { code: n.code, detail: n.detail }, given };
  return { protocol: 'http', method, path: n.path, grpcMethod: undefined };
}

function readClaims(arg: string): Record<string, unknown> {
  let text = arg;
  if (arg.startsWith('@')) {
    try {
      text = readFileSync(arg.slice(1), 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read ${arg.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--claims is not valid JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UsageError('--claims must be a JSON object');
  return v as Record<string, unknown>;
}

/** What authentication would say about this token, as far as can be told without keys. */
function authnNotes(policy: CompiledPolicy, id: Identity | null, info: TokenInfo, now: number): string[] {
  const notes: string[] = [];
  if (info.source === 'token') notes.push('signature not verified: the token was only decoded');
  if (id === null) return notes;
  const trust = policy.issuers.find((i) => i.issuer === id.issuer);
  if (trust === undefined) {
    notes.push(`issuer "${id.issuer}" is not trusted by this policy: the sidecar would refuse the token (ERR_TOKEN_ISSUER_UNKNOWN)`);
    return notes;
  }
  const aud = id.claims['aud'];
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  // A JWT must name its audience and expiry (authn refuses one without); `--claims` stands for an
  // introspection answer too, which may omit `exp`, and `aud` where the issuer allows it.
  const jwt = info.source === 'token';
  if (aud === undefined && (jwt || trust.requireIntrospectedAudience !== false)) {
    notes.push('the token has no aud: the sidecar would refuse it (ERR_TOKEN_AUDIENCE)');
  } else if (aud !== undefined && !trust.audiences.some((a) => auds.includes(a))) {
    notes.push(`audience is not one of [${trust.audiences.join(', ')}]: the sidecar would refuse the token (ERR_TOKEN_AUDIENCE)`);
  }
  const exp = id.claims['exp'];
  if (jwt && typeof exp !== 'number') notes.push('the token has no numeric exp: the sidecar would refuse it (ERR_TOKEN_CLAIMS)');
  if (typeof exp === 'number' && exp * 1000 <= now) notes.push('token is expired: the sidecar would refuse it (ERR_TOKEN_EXPIRED)');
  // The rest of authentication's own checks (authn/claims.ts), as the sidecar runs them: `nbf`
  // and `iat` (exp is told above, without the clock skew), and the claims an identity is made of
  // (`sub` or `client_id`, `scope`, `act`). Found in review: a token without `sub` and
  // `client_id` was explained as a bare "allow".
  const claims = id.claims as JsonObject;
  const time = checkTime(claims, now, DEFAULT_CLOCK_SKEW_SECONDS, false);
  if (time !== undefined && time.code !== 'ERR_TOKEN_EXPIRED') notes.push(`${time.detail}: the sidecar would refuse the token (${time.code})`);
  const parts = identityParts(claims);
  if (isFailure(parts)) notes.push(`${parts.detail}: the sidecar would refuse the token (${parts.code})`);
  const alg = info.header?.['alg'];
  if (typeof alg === 'string' && !trust.algorithms.includes(alg)) notes.push(`algorithm ${alg} is not allowed for this issuer (ERR_TOKEN_ALG_NOT_ALLOWED)`);
  if (info.header !== undefined && trust.requireAtJwtType) {
    const rawTyp = info.header['typ'];
    const typ = typeof rawTyp === 'string' ? rawTyp.toLowerCase() : '';
    if (typ !== 'at+jwt' && typ !== 'application/at+jwt') notes.push('header typ is not at+jwt (RFC 9068): the sidecar would refuse it (ERR_TOKEN_TYPE)');
  }
  if (id.claims['cnf'] !== undefined) notes.push('the token is sender-constrained (cnf): the sidecar checks no proof of possession and would refuse it (ERR_TOKEN_TYPE)');
  for (const c of trust.requiredClaims) if (!(c in id.claims)) notes.push(`required claim ${c} is missing (ERR_TOKEN_CLAIMS)`);
  return notes;
}

function outcome(e: Explanation): 'allow' | 'deny' | 'dry-run' {
  const d = e.verdict.decision;
  if (d.kind === 'deny') return 'deny';
  return d.dryRunDenial === undefined ? 'allow' : 'dry-run';
}

function describeRequest(r: RequestFacts): string {
  return r.protocol === 'grpc' ? `gRPC ${r.grpcMethod ?? r.path}` : `HTTP ${r.method} ${r.path}`;
}

function describeIdentity(id: Identity | null): string {
  if (id === null) return 'none (the call carries no token)';
  const scopes = [...id.scopes].join(' ');
  const actors = id.actors.length === 0 ? 'not delegated' : `acting: ${id.actors.join(' <- ')}`;
  return `issuer ${id.issuer}, subject ${id.subject === '' ? '(none)' : id.subject}, scopes [${scopes}], ${actors}`;
}

function render(policy: CompiledPolicy, facts: Facts, info: TokenInfo, e: Explanation, notes: readonly string[]): string {
  const d = e.verdict.decision;
  const lines: string[] = [];
  lines.push(`policy:   ${policy.source} (service ${policy.service}, version ${policy.version.slice(0, 12)}${policy.dryRun ? ', mode dry-run' : ''})`);
  lines.push(`request:  ${describeRequest(facts.request)}`);
  lines.push(`identity: ${describeIdentity(facts.identity)}${info.source === 'token' ? ' (from --token, signature not verified)' : info.source === 'claims' ? ' (from --claims)' : ''}`);
  if (d.kind === 'deny') {
    const row = ERROR_TABLE[d.code];
    const challenge = row.challenge === 'none' ? '' : row.challenge === 'bare' ? ', WWW-Authenticate: Bearer' : `, error="${row.challenge}"`;
    lines.push(`decision: deny ${d.code} (HTTP ${row.http}, gRPC status ${row.grpc}${challenge})`);
  } else if (d.dryRunDenial !== undefined) {
    lines.push(`decision: dry-run (allowed; would deny with ${d.dryRunDenial.code})`);
  } else {
    lines.push('decision: allow');
  }
  lines.push(`rule:     ${d.rule ?? '(none)'}`);
  lines.push(`reason:   ${d.reason}`);
  for (const n of notes) lines.push(`note:     ${n}`);
  lines.push('', 'rules considered (deny rules first, then allow rules in order):');
  const ordered = [...e.rules.filter((r) => r.action === 'deny'), ...e.rules.filter((r) => r.action === 'allow')];
  const width = Math.max(4, ...ordered.map((r) => r.name.length));
  for (const r of ordered) {
    const mark = r.name === d.rule ? '>' : r.applies ? '+' : '-';
    const kind = `${r.action}${r.dryRun ? ' (dry-run)' : ''}`;
    lines.push(`  ${mark} ${r.name.padEnd(width)}  ${kind.padEnd(15)} ${r.why}`);
  }
  if (ordered.length === 0) lines.push('  (the policy has no rules: every call is refused)');
  lines.push('', "  > decided   + applies   - does not apply");
  return `${lines.join('\n')}\n`;
}

function toJson(policy: CompiledPolicy, facts: Facts, info: TokenInfo, e: Explanation, notes: readonly string[]): unknown {
  const id = facts.identity;
  return {
    outcome: outcome(e),
    decision: e.verdict.decision,
    policy: { file: policy.source, service: policy.service, version: policy.version, dryRun: policy.dryRun },
    request: facts.request,
    identity:
      id === null
        ? null
        : { issuer: id.issuer, subject: id.subject, scopes: [...id.scopes], actors: id.actors, source: info.source, signatureVerified: false },
    notes,
    rules: e.rules,
  };
}
