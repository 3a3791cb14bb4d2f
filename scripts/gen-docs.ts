/**
 * Generates the reference docs and JSON Schemas from the config and policy schemas (written with
 * src/lib/schema.ts), the one place where every option and policy field has its description,
 * default and example:
 *
 *   src/policy/schema.ts  (policySchema)         → docs/policy.md,         docs/schema/policy.schema.json
 *   src/config/sidecar.ts (sidecarConfigSchema)  → docs/sidecar-config.md, docs/schema/sidecar-config.schema.json
 *   src/devidp/config.ts  (devIdpConfigSchema)   → docs/dev-idp.md
 *
 *   node scripts/gen-docs.ts           write the files
 *   node scripts/gen-docs.ts --check   exit 1 (listing them) when the committed files are stale
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { type Schema, toJSONSchema } from '../src/lib/schema.ts';
import { sidecarConfigSchema } from '../src/config/sidecar.ts';
import { devIdpConfigSchema } from '../src/devidp/config.ts';
import { policySchema } from '../src/policy/schema.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// JSON Schema → Markdown reference

interface Section {
  readonly anchor: string;
  readonly title: string;
  /** Where the object first appears in a file, e.g. `rules[].match`. */
  readonly where: string;
  /** Every place it appears (a shared definition can appear at several). */
  readonly places: string[];
  readonly description: string | undefined;
  readonly schema: Json;
}

const DROP_BOUNDS = new Set([9007199254740991, -9007199254740991]);

function refName(ref: string): string {
  return ref.replace(/^#\/\$defs\//, '');
}

function anchorOf(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function inlineYaml(v: unknown): string {
  return stringify(v, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0 }).trim();
}

function code(s: string): string {
  return s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``;
}

/** Walks the schema and returns one section per object type, in order of first appearance. */
function collectSections(root: Json, rootTitle: string): Section[] {
  const defs = (root['$defs'] ?? {}) as Record<string, Json>;
  const sections: Section[] = [];
  const seenDefs = new Map<string, string[]>();
  const visit = (node: Json, where: string, title: string | undefined): void => {
    if (typeof node['$ref'] === 'string') {
      const name = refName(node['$ref']);
      const places = seenDefs.get(name);
      if (places !== undefined) {
        if (!places.includes(where)) places.push(where);
        return;
      }
      seenDefs.set(name, [where]);
      const def = defs[name] ?? {};
      visit(def, where, name);
      return;
    }
    if (Array.isArray(node['anyOf'])) {
      for (const alt of node['anyOf'] as Json[]) visit(alt, where, title);
      return;
    }
    if (node['type'] === 'array' && node['items'] !== undefined) {
      visit(node['items'] as Json, `${where}[]`, title);
      return;
    }
    if (node['type'] !== 'object' || node['properties'] === undefined) return;
    const t = title ?? (where === '' ? rootTitle : where);
    const places = title === undefined ? [where] : (seenDefs.get(title) ?? [where]);
    sections.push({ anchor: anchorOf(t), title: t, where, places, description: node['description'] as string | undefined, schema: node });
    for (const [key, prop] of Object.entries(node['properties'] as Record<string, Json>)) {
      visit(prop, where === '' ? key : `${where}.${key}`, undefined);
    }
  };
  visit(root, '', rootTitle);
  return sections;
}

function typeOf(node: Json, sections: readonly Section[], where: string): string {
  if (typeof node['$ref'] === 'string') {
    const name = refName(node['$ref']);
    return `[${name}](#${anchorOf(name)})`;
  }
  if (node['const'] !== undefined) return code(JSON.stringify(node['const']));
  if (Array.isArray(node['enum'])) return (node['enum'] as unknown[]).map((e) => code(String(e))).join(' \\| ');
  if (Array.isArray(node['anyOf'])) return (node['anyOf'] as Json[]).map((a) => typeOf(a, sections, where)).join(' \\| ');
  if (Array.isArray(node['type'])) return (node['type'] as string[]).join(' \\| ');
  switch (node['type']) {
    case 'array': {
      const items = typeOf((node['items'] ?? {}) as Json, sections, `${where}[]`);
      const min = node['minItems'];
      const max = node['maxItems'];
      const bounds = [typeof min === 'number' && min > 0 ? `at least ${min}` : '', typeof max === 'number' ? `at most ${max}` : ''].filter((x) => x !== '');
      return `list of ${items}${bounds.length > 0 ? ` (${bounds.join(', ')})` : ''}`;
    }
    case 'object': {
      const s = sections.find((x) => x.where === where);
      return s === undefined ? 'object' : `[object](#${s.anchor})`;
    }
    case 'integer':
    case 'number': {
      const lo = typeof node['minimum'] === 'number' && !DROP_BOUNDS.has(node['minimum']) ? `≥ ${node['minimum']}` : typeof node['exclusiveMinimum'] === 'number' ? `> ${node['exclusiveMinimum']}` : '';
      const hi = typeof node['maximum'] === 'number' && !DROP_BOUNDS.has(node['maximum']) ? `≤ ${node['maximum']}` : '';
      const r = [lo, hi].filter((x) => x !== '').join(', ');
      return `${node['type']}${r === '' ? '' : ` (${r})`}`;
    }
    case 'string': {
      if (node['format'] === 'uri') return 'URL';
      // long patterns are unreadable in a table; the JSON Schema and the description carry them
      if (typeof node['pattern'] === 'string' && node['pattern'].length <= 40) return `string matching ${code(node['pattern'])}`;
      return 'string';
    }
    default:
      return typeof node['type'] === 'string' ? node['type'] : 'any';
  }
}

/** A table cell: `|` must be escaped even inside code spans. */
function cell(s: string): string {
  return s.replace(/(?<!\\)\|/g, '\\|');
}

function renderSections(sections: readonly Section[], defs: Record<string, Json>): string {
  const out: string[] = [];
  for (const s of sections) {
    out.push(`<a id="${s.anchor}"></a>`, '', `### ${s.title}`, '');
    if (s.where !== '' && !(s.places.length === 1 && s.places[0] === s.title)) {
      out.push(`Appears at ${s.places.map(code).join(', ')}.`, '');
    }
    if (s.description !== undefined) out.push(s.description, '');
    const props = (s.schema['properties'] ?? {}) as Record<string, Json>;
    const required = new Set((s.schema['required'] ?? []) as string[]);
    out.push('| Field | Type | Default |', '| --- | --- | --- |');
    for (const [key, prop] of Object.entries(props)) {
      const where = s.where === '' ? key : `${s.where}.${key}`;
      const dflt = prop['default'] !== undefined ? code(inlineYaml(prop['default'])) : required.has(key) ? '**required**' : '*optional*';
      out.push(`| [${code(key)}](#${fieldAnchor(s, key)}) | ${cell(typeOf(prop, sections, where))} | ${cell(dflt)} |`);
    }
    out.push('');
    for (const [key, prop] of Object.entries(props)) {
      const where = s.where === '' ? key : `${s.where}.${key}`;
      const sub = sections.find((x) => x.where === where && x.title === where);
      out.push(`<a id="${fieldAnchor(s, key)}"></a>`, `**${code(key)}**${required.has(key) ? ' (required)' : ''}: ${describe(prop, defs, sub)}`, '');
      const examples = prop['examples'];
      if (Array.isArray(examples) && examples.length > 0) {
        out.push(`Example${examples.length > 1 ? 's' : ''}: ${examples.map((e) => code(`${key}: ${inlineYaml(e)}`)).join(', ')}`, '');
      }
    }
  }
  return out.join('\n');
}

function fieldAnchor(s: Section, key: string): string {
  return `${s.anchor}--${anchorOf(key)}`;
}

/**
 * A field's description. A field that is a shared definition borrows the definition's, with a
 * link; a nested object links to its own section.
 */
function describe(prop: Json, defs: Record<string, Json>, nested: Section | undefined): string {
  const link = nested === undefined ? '' : ` Options: see [${nested.title}](#${nested.anchor}).`;
  if (typeof prop['description'] === 'string') return `${prop['description']}${link}`;
  if (nested !== undefined) return link.trim();
  const ref = prop['$ref'] ?? (prop['items'] as Json | undefined)?.['$ref'];
  if (typeof ref === 'string') {
    const name = refName(ref);
    const d = defs[name]?.['description'];
    return `${typeof d === 'string' ? `${d} ` : ''}See [${name}](#${anchorOf(name)}).`;
  }
  // a field with no description fails the docs test (test/unit/policy/docs.test.ts)
  return '(no description)';
}

// ---------------------------------------------------------------------------------------------
// docs/policy.md

/** A complete policy showing most features; tests check that it loads and behaves as described. */
export const EXAMPLE_POLICY = `apiVersion: ward.dev/v1
kind: Policy
service: orders
mode: enforce
issuers:
  - issuer: https://idp.example.com
    audiences: [urn:ward:orders]
    algorithms: [RS256, ES256]
rules:
  # Deny rules are checked first, all of them: nobody deletes orders, whatever their scopes.
  - name: no-deletes
    action: deny
    match:
      grpc: [/ward.demo.v1.Orders/DeleteOrder]
      http: [{ methods: [DELETE], prefix: /api/orders }]

  # Health checks need no token.
  - name: health
    action: allow
    token: optional
    match:
      http: [{ methods: [GET, HEAD], exact: /healthz }]

  - name: readers
    description: Anyone with orders.read may read orders.
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder, /ward.demo.v1.Orders/ListOrders]
      http: [{ methods: [GET], glob: /api/orders/* }]
    when:
      - scopes: { allOf: [orders.read] }

  - name: writers
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/CreateOrder, /ward.demo.v1.Orders/UploadOrders]
    when:
      - scopes: { allOf: [orders.write] }
      - claim: tenant.id           # nested claim {"tenant": {"id": "acme"}}
        in: [acme, globex]
      # called directly, or on a user's behalf through the frontend only
      - any:
          - delegated: false
          - actor: { anyOf: [frontend] }

  # New rule being rolled out: admits every call to its route, records what it would refuse.
  - name: chat-beta
    action: allow
    dryRun: true
    match:
      grpc: [/ward.demo.v1.Orders/Chat]
    when:
      - claim: beta
        equals: true
`;

const POLICY_INTRO = `# Policy file reference

<!-- Generated by scripts/gen-docs.ts from src/policy/schema.ts. Do not edit: run \`npm run gen\`. -->

Each service has one policy file: which token issuers it trusts, and which callers may make which
calls. The sidecar loads it at start-up (an invalid file stops it, with \`file:line:column\` for
every problem) and reloads it when it changes (an invalid new version is refused and the last
good one stays in force). JSON Schema for editors: [schema/policy.schema.json](schema/policy.schema.json).

## Example

\`\`\`yaml
${EXAMPLE_POLICY}\`\`\`

## How a call is decided

Authentication runs first: a call that carries a token is refused unless the token verifies
against one of the policy's \`issuers\` (signature, \`iss\`, \`aud\`, \`exp\`, \`typ\`). A call
without a token goes on to the rules with no identity. Then, in this order:

1. **Deny rules win.** Every deny rule whose route matches and whose conditions all hold refuses
   the call with \`ERR_POLICY_DENIED\`, whatever the allow rules say. A deny rule without
   conditions applies to calls with and without a token; one with conditions never matches a
   call without a token (without a token every condition is false).
2. **First matching allow rule.** Allow rules are tried in file order; the first whose route
   matches, whose token requirement is met and whose conditions all hold admits the call.
3. **Otherwise the call is refused**, with the code that tells the caller what to fix:

   | Situation | Code | HTTP / gRPC |
   | --- | --- | --- |
   | No allow rule covers the route | \`ERR_POLICY_NO_MATCH\` | 403 / PERMISSION_DENIED |
   | The call had no token, and the allow rules for the route need one | \`ERR_TOKEN_MISSING\` | 401 with \`WWW-Authenticate: Bearer\` / UNAUTHENTICATED |
   | An allow rule for the route failed only on scope conditions | \`ERR_SCOPE_INSUFFICIENT\` | 403 with \`error="insufficient_scope"\` / PERMISSION_DENIED |
   | An allow rule for the route failed on other conditions | \`ERR_POLICY_NO_MATCH\` | 403 / PERMISSION_DENIED |

Every decision names the rule that decided it (for a refusal: the deny rule, or the closest allow
rule that failed) and a one-line reason such as \`rule "writers": scope lacks orders.write\`. Reasons
name claims and policy values, never values taken from the token.

A file without rules refuses every call.

## Matching calls

- **gRPC**: \`/package.Service/Method\`, or \`/package.Service/*\` for all methods of a service.
  In an allow rule they match gRPC calls only. In a deny rule they also match a non-gRPC
  request to the same path, so a deny cannot be dodged by changing the content type.
- **HTTP**: optional \`methods\` (upper case; \`GET\` does not imply \`HEAD\`) and exactly one of
  - \`exact\`: the whole path, case-sensitive (\`/api\` does not match \`/api/\`);
  - \`prefix\`: segment-aware, \`/api\` matches \`/api\`, \`/api/\` and \`/api/x\` but not \`/apix\`;
    \`/\` matches everything; a prefix may not end with \`/\`;
  - \`glob\`: \`*\` is exactly one non-empty segment, \`**\` any number of segments including none
    (\`/api/**\` matches \`/api\`, \`/api/\` and \`/api/a/b\`; \`/api/*\` matches \`/api/a\` but not
    \`/api/\` or \`/api/a/b\`). Wildcards are whole segments only.

  HTTP routes match gRPC calls too: a gRPC call is \`POST /package.Service/Method\`.
- Paths are matched **after** the sidecar normalized them, and exactly that path is forwarded to
  the app: the query is ignored, \`.\` and \`..\` segments are resolved and then \`//\` is merged (in
  that order, as Envoy and an app resolving the path would: \`/a//..\` is \`/a/\`), encoded
  slashes are refused. A policy path containing \`?\`, \`#\`, \`//\` or dot segments could never
  match, so it is refused when the file is loaded; so is a path the sidecar would spell
  differently (an escaped unreserved character such as \`%7E\`, whose request is matched as \`~\`;
  lower-case hex such as \`%c3\`; \`{\`, \`[\`, \`"\` and the like, which requests carry
  percent-encoded): the error names the spelling to write. A path with \`;\`, \`\\\`, a space or a
  non-ASCII character is refused too: requests with one never get past the sidecar.

## Tokens and conditions

\`token: required\` (the default) means an allow rule only admits calls with a valid token;
\`token: optional\` also admits calls without one (a token that is present must still be valid).
Conditions (\`when\`) all have to hold; \`any:\` holds when one of its conditions does. Because a
call without a token has no claims, a rule with \`token: optional\` cannot have conditions.

| Condition | Holds when |
| --- | --- |
| \`claim: a.b\` + \`equals: v\` | the (nested) claim equals \`v\` (string, number or boolean; no type coercion) |
| \`claim\` + \`in: [..]\` | the claim is one of the values |
| \`claim\` + \`anyOf\` / \`allOf: [..]\` | the claim is a list, or a space-delimited string like \`scope\`, with any / all of the values |
| \`claim\` + \`exists: true\` / \`false\` | the claim is present (not null) / absent |
| \`claim\` + \`gt\` \`gte\` \`lt\` \`lte\` | the claim is a number in range (several operators on one claim must all hold) |
| \`scopes: {anyOf, allOf}\` | the token's scopes (\`scope\` or \`scp\`) include any / all of the values |
| \`issuer: {in: [..]}\` | the token came from one of these issuers (each must be under \`issuers\`) |
| \`subject: {in: [..]}\` | \`sub\` (or \`client_id\` without \`sub\`) is one of the values |
| \`actor: {anyOf: [..]}\` | RFC 8693 delegation: the immediate actor (\`act.sub\`) is one of the values |
| \`via: {anyOf, allOf}\` | any / all of the values appear anywhere in the \`act\` chain |
| \`delegated: true\` / \`false\` | the token has / has no \`act\` claim |
| \`maxDepth: n\` | the \`act\` chain has at most \`n\` actors |
| \`any: [..]\` | at least one of the listed conditions holds |

Claims are read through own properties of nested objects only; for a claim name containing dots,
give the path as a list: \`claim: ["https://example.com/claims", "roles"]\`. A refusal is
\`ERR_SCOPE_INSUFFICIENT\` when the closest allow rule failed only on \`scopes\` conditions (or
\`claim: scope\`/\`scp\` tests, or an \`any:\` made only of those).

## Dry-run

- \`mode: dry-run\` (whole file): every call is let through. When the policy would have refused
  one, the decision is an allow by the rule \`(dry-run)\` that records the refusal it replaced
  (\`dryRunDenial\`: code, rule, reason), for logs and telemetry.
- \`dryRun: true\` on a **deny** rule: when it matches, the would-be denial is recorded and
  evaluation goes on as if the rule were absent.
- \`dryRun: true\` on an **allow** rule: when no rule admits a call to its route, and no
  enforced (not dry-run) allow rule covers that route, it admits the call and records the
  refusal its token requirement or conditions would have caused. Use it to tighten a rule's
  conditions without breaking callers: replace the rule by its tightened version marked
  \`dryRun: true\`, watch the recorded refusals, then drop \`dryRun\`. Where an enforced allow rule
  also covers the route, that rule decides and the dry-run rule admits nothing it refuses: a
  rule in dry-run never lets through a call the enforced rules refuse.

## Versions and reloading

A policy's version is the SHA-256 of its canonical JSON (keys sorted, defaults applied), so the
same content has the same version on every replica, whatever its key order, comments or
spelled-out defaults. The sidecar watches the file (directory events, which also catch atomic
rename-replace and Kubernetes ConfigMap updates, plus a periodic stat poll), and logs
\`policy updated\` with the new version when it swaps. A version that fails to load is logged with
its \`file:line:column\` errors and refused; the last good version stays in force. A policy naming
another \`service\` than the sidecar's is refused.

Files the policy names (\`hmacSecretFile\`) are watched the same way, in their own directories
(a Kubernetes Secret volume's \`..data\` swap included). When one changes, the policy is compiled
again and swapped in although its text is the same: a rotated secret is in force within the poll
period (2 s; usually at once) and the old one is refused from then on, tokens verified with it
before included. The version stays the same, because it names the policy text (what the control
plane distributes and \`ward status\` shows), never a secret: a version derived from a secret of
low entropy would let anyone who sees it guess the secret offline. Such a swap is logged as
\`policy updated\` with \`reason: referenced file changed\` and the file's path (never its content).
A new secret that is unreadable, empty or too short is refused like an invalid text: logged with
\`issuers[i].hmacSecretFile\`, reported as the last error, the previous secret stays in force until
the file is good again.
With \`concurrency\` above 1, the primary hands the swap to every worker, and each compiles the
text again and reads the file itself.

## Checking and explaining

\`\`\`
ward policy check orders.policy.yaml
ward policy explain --policy orders.policy.yaml --token "$TOKEN" --grpc /ward.demo.v1.Orders/CreateOrder
ward policy explain --policy orders.policy.yaml --claims @claims.json --http 'GET /api/orders/42' --json
\`\`\`

\`check\` prints \`FILE: ok (service S, version V, N rules)\` or each problem as
\`file:line:column: field.path: message\`, and exits 0 or 1 (\`--skip-secrets\` skips reading HMAC
secrets). \`explain\` prints the decision (\`allow\`, \`deny\` or \`dry-run\`), its code, the rule that
decided and why, and every rule with the reason it did or did not apply. A \`--token\` is only
decoded: its signature is **not verified** (the output says so), though what authentication
would refuse is pointed out (an untrusted issuer, the audience, expiry, \`nbf\` and \`iat\` with the
default 30 s clock skew, \`typ\`, a missing \`sub\` and \`client_id\`, a malformed \`scope\` or \`act\`).
The request is taken as the sidecar takes it with its default \`paths\` settings: the method is
case-sensitive, the path normalized (\`/public/../admin\` is judged as \`/admin\`), and a request
the sidecar refuses before any policy (an escaped slash, an unknown method) is a deny with that
code. Exit status: 0 allow (or dry-run), 3 deny, 1 error, 2 usage.

## Reference
`;

// ---------------------------------------------------------------------------------------------
// docs/sidecar-config.md

const DEV_IDP_INTRO = `# Development IdP config reference

<!-- Generated by scripts/gen-docs.ts from src/devidp/config.ts. Do not edit: run \`npm run gen\`. -->

The file given to \`ward dev-idp --config FILE\`: the development OpenID Provider (oidc-provider)
that the demo and the tests run against. DEVELOPMENT ONLY: it binds loopback, and every secret in
its config is public. Without \`--config\` it runs the embedded demo config, which
\`ward dev-idp --print-config\` prints as a starting point. Unknown keys are errors, reported with
\`file:line:column\` and the field path.
`;

const SIDECAR_INTRO = `# Sidecar config reference

<!-- Generated by scripts/gen-docs.ts from src/config/sidecar.ts. Do not edit: run \`npm run gen\`. -->

The file given to \`ward sidecar --config FILE\`. Relative paths in it resolve against the
directory of the file. Unknown keys are errors, reported with \`file:line:column\` and the field
path, and the sidecar does not start. JSON Schema for editors:
[schema/sidecar-config.schema.json](schema/sidecar-config.schema.json). The policy file it names is
described in [policy.md](policy.md).

## Reference
`;

// ---------------------------------------------------------------------------------------------

export interface GeneratedFile {
  readonly path: string;
  readonly content: string;
}

function jsonSchemaOf(schema: Schema, id: string): Json {
  const js = toJSONSchema(schema);
  return { $schema: js['$schema'], $id: id, ...js };
}

function defsOf(js: Json): Record<string, Json> {
  return (js['$defs'] ?? {}) as Record<string, Json>;
}

export function generate(): GeneratedFile[] {
  const policyJson = jsonSchemaOf(policySchema, 'https://ward.dev/schema/policy.schema.json');
  const sidecarJson = jsonSchemaOf(sidecarConfigSchema, 'https://ward.dev/schema/sidecar-config.schema.json');

  const policySections = collectSections(policyJson, 'Policy');
  const policyMd = `${POLICY_INTRO}\n${renderSections(policySections, defsOf(policyJson))}`;
  const sidecarSections = collectSections(sidecarJson, 'Sidecar config');
  const sidecarMd = `${SIDECAR_INTRO}\n${renderSections(sidecarSections, defsOf(sidecarJson))}`;

  const devIdpJson = jsonSchemaOf(devIdpConfigSchema, 'https://ward.dev/schema/dev-idp.schema.json');
  const devIdpMd = `${DEV_IDP_INTRO}\n${renderSections(collectSections(devIdpJson, 'Dev IdP config'), defsOf(devIdpJson))}`;

  return [
    { path: 'docs/policy.md', content: `${policyMd.trimEnd()}\n` },
    { path: 'docs/dev-idp.md', content: `${devIdpMd.trimEnd()}\n` },
    { path: 'docs/schema/policy.schema.json', content: `${JSON.stringify(policyJson, null, 2)}\n` },
    { path: 'docs/sidecar-config.md', content: `${sidecarMd.trimEnd()}\n` },
    { path: 'docs/schema/sidecar-config.schema.json', content: `${JSON.stringify(sidecarJson, null, 2)}\n` },
  ];
}

/** Files whose committed content differs from what would be generated. */
export function staleFiles(root = ROOT): string[] {
  return generate()
    .filter((f) => {
      try {
        return readFileSync(join(root, f.path), 'utf8') !== f.content;
      } catch {
        return true;
      }
    })
    .map((f) => f.path);
}

function main(argv: readonly string[]): number {
  if (argv.includes('--check')) {
    const stale = staleFiles();
    if (stale.length === 0) return 0;
    process.stderr.write(`generated docs are stale (run: node scripts/gen-docs.ts):\n${stale.map((f) => `  ${f}\n`).join('')}`);
    return 1;
  }
  for (const f of generate()) {
    const file = join(ROOT, f.path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, f.content);
    process.stdout.write(`wrote ${relative(process.cwd(), file)}\n`);
  }
  return 0;
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
