import * as z from '../lib/schema.ts';
import { HTTP_METHODS } from '../lib/normalize.ts';

/**
 * The policy file format (`apiVersion: ward.dev/v1`, `kind: Policy`). Every field carries its
 * description, default and example here; `scripts/gen-docs.ts` renders docs/policy.md and
 * docs/schema/policy.schema.json from this one source, so the reference cannot drift.
 *
 * The schema checks shape and types only. Rules that need more than one field at a time
 * (unique names, known issuers, "exactly one of", glob syntax) live in `semantic.ts`, which
 * reports them with the same file:line:column and field path.
 */

/** Signature algorithms a policy may allow. `none` is not in the list and cannot be. */
export const ALGORITHMS = [
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA', 'Ed25519',
  'HS256', 'HS384', 'HS512',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];
export const DEFAULT_ALGORITHMS: readonly Algorithm[] = ['RS256', 'ES256', 'PS256', 'EdDSA'];

export const SERVICE_NAME = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

/** `/package.Service/Method` or `/package.Service/*` (a service-wide wildcard). */
export const GRPC_METHOD = /^\/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\/([A-Za-z_][A-Za-z0-9_]*|\*)$/;

const nonEmpty = z.string().min(1, 'must not be empty');
/**
 * A number a claim is compared with: one that JSON and YAML carry exactly. Past 2^53 - 1 both
 * round (9007199254740993 is read as ...992), so `equals` would match a token carrying another
 * value than the one written (found in review); such an id is compared as a string.
 */
const exactNumber = z.number().refine((n) => !Number.isFinite(n) || Math.abs(n) <= Number.MAX_SAFE_INTEGER, 'must be between -(2^53 - 1) and 2^53 - 1: larger numbers are rounded when read (from the policy and from tokens alike), so they cannot be compared exactly; compare such a claim as a string');
const scalar = z.union([z.string(), exactNumber, z.boolean()], { error: 'expected a string, number or boolean' });
const stringList = z.array(nonEmpty).min(1, 'needs at least one value');

const issuer = z
  .strictObject({
    issuer: z.url({ error: 'must be an absolute URL' }).meta({
      description: 'Issuer identifier, compared exactly (character for character) with the token\'s `iss` claim. No trailing-slash normalization.',
      examples: ['https://idp.example.com/realms/prod'],
    }),
    audiences: z.array(nonEmpty).min(1, 'needs at least one audience').meta({
      description: 'Accepted `aud` values: a token is accepted when its `aud` contains at least one of them. Usually this service\'s resource URI.',
      examples: [['https://orders.example.com']],
    }),
    jwksUri: z.url({ error: 'must be an absolute URL' }).optional().meta({
      description: 'Where the issuer\'s signing keys are published. When absent, it comes from OIDC discovery (`<issuer>/.well-known/openid-configuration`).',
      examples: ['https://idp.example.com/realms/prod/protocol/openid-connect/certs'],
    }),
    discovery: z.boolean().default(true).meta({
      description: 'Fetch OIDC discovery metadata for this issuer (JWKS URI, introspection endpoint) when they are not given here. The document is read from `<issuer>/.well-known/openid-configuration` with the same rules as the key set (no redirects, timeout, size cap, strict JSON) and must name this issuer (OpenID Connect Discovery §4.3), or the issuer\'s keys are not loaded.',
      examples: [false],
    }),
    algorithms: z
      .array(z.enum(ALGORITHMS, { error: `unknown algorithm; expected one of ${ALGORITHMS.join(', ')}` }))
      .min(1, 'needs at least one algorithm')
      .default([...DEFAULT_ALGORITHMS])
      .meta({
        description: 'Signature algorithms accepted from this issuer (`none` never is). `HS256`/`HS384`/`HS512` are allowed only together with `hmacSecretFile` or `hmacSecretEnv`: a shared secret is never implied by a token\'s header.',
        examples: [['ES256'], ['HS256']],
      }),
    hmacSecretFile: nonEmpty.optional().meta({
      description: 'File holding the shared HMAC secret (for `HS*` algorithms), relative to the policy file. Trailing newlines are removed. At least as long as the longest hash among the issuer\'s HS algorithms (RFC 7518 §3.2): 32 bytes for HS256, 48 for HS384, 64 for HS512. Re-read when it changes, as the policy file is (its directory watched, the file polled every 2 s; a Kubernetes Secret update is seen): the new secret is in force within that time and the old one is no longer accepted, with the same policy version (logged as `policy updated`, reason `referenced file changed`). A new secret that cannot be read or is too short is refused and the previous one stays in force.',
      examples: ['secrets/orders-hmac.key'],
    }),
    hmacSecretEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional().meta({
      description: 'Environment variable holding the shared HMAC secret (for `HS*` algorithms). Trailing newlines are removed, as from a file. At least as long as the longest hash among the issuer\'s HS algorithms (RFC 7518 §3.2): 32 bytes for HS256, 48 for HS384, 64 for HS512.',
      examples: ['ORDERS_HMAC_SECRET'],
    }),
    requireAtJwtType: z.boolean().default(true).meta({
      description: 'RFC 9068: accept only JWTs whose header has `typ: at+jwt` (access tokens), so ID tokens and other JWTs from the same issuer are refused.',
      examples: [false],
    }),
    introspection: z.boolean().default(false).meta({
      description: 'Accept opaque (non-JWT) tokens from this issuer, checked through RFC 7662 introspection with the sidecar\'s client credentials for the issuer (`authn.credentials` in the sidecar config).',
      examples: [true],
    }),
    requireIntrospectedAudience: z.boolean().default(true).meta({
      description: 'An introspection answer (RFC 7662) must carry `aud` naming one of `audiences`, as a JWT must. RFC 7662 makes `aud` optional, and an answer without it does not say which service the token is for: an IdP answers `active: true` for its refresh tokens and for access tokens minted for other services too (oidc-provider answers a refresh token with `sub`, `client_id`, `scope` and no `aud`). `false` only for an IdP that leaves `aud` out of its access tokens\' answers: `aud` is then checked when present. Answers that say they are for another kind of token (`token_type` other than `Bearer`, `token_use` other than `access_token`) or for a sender-constrained one (`cnf`) are refused either way.',
      examples: [false],
    }),
    requiredClaims: z.array(nonEmpty).default([]).meta({
      description: 'Claims that must be present in every token of this issuer, in addition to `iss`, `exp` and `aud`, which a JWT must always carry (an introspection answer is held to `iss` and `exp` when it has them, RFC 7662 making them optional, and to `aud` as `requireIntrospectedAudience` says; list them here to require them).',
      examples: [['sub', 'client_id']],
    }),
  })
  .meta({ id: 'Issuer', description: 'A trusted token issuer.' });

const httpMatch = z
  .strictObject({
    methods: z
      .array(z.enum(HTTP_METHODS))
      .min(1, 'needs at least one method; omit the field to match every method')
      .optional()
      .meta({
        description: 'HTTP methods (upper case), of those the sidecar accepts: a request with any other is refused before policy, so a rule naming one could never match. Omitted: every method. `HEAD` is not implied by `GET`. gRPC calls are `POST`.',
        examples: [['GET', 'HEAD']],
      }),
    exact: nonEmpty.optional().meta({
      description: 'The path equals this string exactly (case-sensitive; `/api` does not match `/api/`). Exactly one of `exact`, `prefix`, `glob`.',
      examples: ['/healthz'],
    }),
    prefix: nonEmpty.optional().meta({
      description: 'Segment-aware prefix: `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`. `/` matches every path. Must not end with `/` (except `/` itself).',
      examples: ['/api/orders'],
    }),
    glob: nonEmpty.optional().meta({
      description: 'Segment glob: `*` is exactly one non-empty segment, `**` any number of segments (including none). Wildcards are whole segments only (`/v*/x` is invalid). `/api/**` matches `/api`, `/api/` and `/api/a/b`.',
      examples: ['/api/orders/*/items/**'],
    }),
  })
  .meta({ id: 'HttpMatch', description: 'An HTTP route: optional methods and exactly one path matcher. Paths are matched after the sidecar normalized them (no query, no `//`, no dot segments).' });

const match = z
  .strictObject({
    grpc: z
      .array(z.string().regex(GRPC_METHOD, 'must be /package.Service/Method or /package.Service/*'))
      .min(1, 'needs at least one method')
      .optional()
      .meta({
        description: 'gRPC methods as `/package.Service/Method`, or `/package.Service/*` for every method of a service. In an allow rule these match gRPC calls only; in a deny rule they also match a non-gRPC request to the same path, so a deny cannot be side-stepped by changing the content type.',
        examples: [['/ward.demo.v1.Orders/GetOrder', '/ward.demo.v1.Orders/*']],
      }),
    http: z.array(httpMatch).min(1, 'needs at least one route').optional().meta({
      description: 'HTTP routes. They apply to gRPC calls too (a gRPC call is `POST /package.Service/Method`).',
      examples: [[{ methods: ['GET'], prefix: '/api/orders' }]],
    }),
  })
  .meta({ id: 'Match', description: 'Which calls a rule is about: the rule applies when any listed gRPC method or HTTP route matches. At least one of `grpc`, `http`.' });

const anyOfAllOf = z
  .strictObject({
    anyOf: stringList.optional().meta({ description: 'Holds when at least one of these values is present.', examples: [['orders.read', 'orders.admin']] }),
    allOf: stringList.optional().meta({ description: 'Holds when every one of these values is present.', examples: [['orders.read', 'orders.write']] }),
  })
  .meta({ id: 'SetTest', description: 'A test on a set of strings: `anyOf`, `allOf`, or both (both must hold).' });

const oneOf = z
  .strictObject({
    in: stringList.meta({ description: 'The value must be one of these (exact, case-sensitive).', examples: [['https://idp.example.com']] }),
  })
  .meta({ id: 'OneOf', description: 'The value is one of a list.' });

const actorTest = z
  .strictObject({
    anyOf: stringList.meta({ description: 'The immediate actor (`act.sub`) is one of these.', examples: [['frontend']] }),
  })
  .meta({ id: 'ActorTest', description: 'A test on the immediate actor of a delegated call.' });

export interface PolicyConditionInput {
  claim?: string | string[] | undefined;
  equals?: string | number | boolean | undefined;
  in?: (string | number | boolean)[] | undefined;
  anyOf?: string[] | undefined;
  allOf?: string[] | undefined;
  exists?: boolean | undefined;
  gt?: number | undefined;
  gte?: number | undefined;
  lt?: number | undefined;
  lte?: number | undefined;
  scopes?: { anyOf?: string[] | undefined; allOf?: string[] | undefined } | undefined;
  issuer?: { in: string[] } | undefined;
  subject?: { in: string[] } | undefined;
  actor?: { anyOf: string[] } | undefined;
  via?: { anyOf?: string[] | undefined; allOf?: string[] | undefined } | undefined;
  delegated?: boolean | undefined;
  maxDepth?: number | undefined;
  any?: PolicyConditionInput[] | undefined;
}

/** The keys that name what a condition is about; exactly one per condition (semantic.ts). */
export const CONDITION_SUBJECTS = ['claim', 'scopes', 'issuer', 'subject', 'actor', 'via', 'delegated', 'maxDepth', 'any'] as const;
/** Operators that go with `claim`. */
export const CLAIM_OPERATORS = ['equals', 'in', 'anyOf', 'allOf', 'exists', 'gt', 'gte', 'lt', 'lte'] as const;

const number = exactNumber.refine(Number.isFinite, 'must be a finite number');

export const conditionSchema: z.Schema<PolicyConditionInput> = z
  .strictObject({
    claim: z
      .union([nonEmpty, z.array(nonEmpty).min(1)], { error: 'expected a dotted claim path or a list of path segments' })
      .optional()
      .meta({
        description: 'A token claim, by dotted path into nested objects (`tenant.id` reads `{"tenant":{"id":\u2026}}`). For a claim name that itself contains dots, give the segments as a list (`["https://example.com/roles"]`). Combine with one or more operators; all must hold.',
        examples: ['tenant.id', ['https://example.com/claims', 'roles']],
      }),
    equals: scalar.optional().meta({
      description: 'With `claim`: the claim equals this string, number or boolean (same type; `"1"` is not `1`). Numbers here and in `in`, `gt`, `gte`, `lt`, `lte` must lie within \u00b1(2^53 - 1), where JSON and YAML numbers are exact, and from 2^52 on be whole numbers in decimal digits; compare larger ids as strings.',
      examples: ['acme', 42, true],
    }),
    in: z.array(scalar).min(1, 'needs at least one value').optional().meta({
      description: 'With `claim`: the claim (a single value) is one of these.',
      examples: [['gold', 'platinum']],
    }),
    anyOf: stringList.optional().meta({
      description: 'With `claim`: the claim is a list, or a space-delimited string such as `scope`, containing at least one of these.',
      examples: [['admin', 'ops']],
    }),
    allOf: stringList.optional().meta({
      description: 'With `claim`: the claim is a list, or a space-delimited string such as `scope`, containing every one of these.',
      examples: [['orders.read', 'orders.write']],
    }),
    exists: z.boolean().optional().meta({
      description: 'With `claim`: `true` = the claim is present (and not null); `false` = it is absent.',
      examples: [true],
    }),
    gt: number.optional().meta({ description: 'With `claim`: the claim is a number greater than this.', examples: [0] }),
    gte: number.optional().meta({ description: 'With `claim`: the claim is a number greater than or equal to this.', examples: [18] }),
    lt: number.optional().meta({ description: 'With `claim`: the claim is a number less than this.', examples: [100] }),
    lte: number.optional().meta({ description: 'With `claim`: the claim is a number less than or equal to this.', examples: [3] }),
    scopes: anyOfAllOf.optional().meta({
      description: 'The token\'s scopes (space-delimited `scope`, or an `scp` list). When an allow rule fails only on scope conditions, the call is refused with `ERR_SCOPE_INSUFFICIENT` (`error="insufficient_scope"`).',
      examples: [{ allOf: ['orders.write'] }],
    }),
    issuer: oneOf.optional().meta({
      description: 'The token\'s issuer is one of these; each must be declared under `issuers`.',
      examples: [{ in: ['https://idp.example.com'] }],
    }),
    subject: oneOf.optional().meta({
      description: 'The caller\'s subject (`sub`, or `client_id` when there is no `sub`) is one of these.',
      examples: [{ in: ['svc-billing', 'svc-frontend'] }],
    }),
    actor: actorTest.optional().meta({
      description: 'RFC 8693 delegation: the immediate actor (`act.sub`, the service that called on the subject\'s behalf) is one of these. False when the call is not delegated.',
      examples: [{ anyOf: ['frontend'] }],
    }),
    via: anyOfAllOf.optional().meta({
      description: 'RFC 8693 delegation: tests every actor in the `act` chain (`act.sub`, `act.act.sub`, \u2026).',
      examples: [{ anyOf: ['gateway'] }],
    }),
    delegated: z.boolean().optional().meta({
      description: '`true`: the token carries an `act` claim (someone acts on the subject\'s behalf); `false`: it does not.',
      examples: [false],
    }),
    maxDepth: z.int().min(0).optional().meta({
      description: 'The `act` chain has at most this many actors (0 = not delegated).',
      examples: [2],
    }),
    get any(): z.Optional<PolicyConditionInput[]> {
      return z.array(conditionSchema).min(1, 'needs at least one condition').optional().meta({
        description: 'Holds when at least one of these conditions holds (OR). Each item is a condition like those of `when`.',
        examples: [[{ subject: { in: ['ops-bot'] } }, { scopes: { allOf: ['orders.admin'] } }]],
      });
    },
  })
  .meta({
    id: 'Condition',
    description: 'One test on the caller. Exactly one of `claim` (with its operators), `scopes`, `issuer`, `subject`, `actor`, `via`, `delegated`, `maxDepth`, `any`. Without a token every condition is false.',
  });

const rule = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" or "-"').max(128).meta({
      description: 'Unique name; decisions, logs and metrics name the rule that decided.',
      examples: ['readers'],
    }),
    description: z.string().optional().meta({ description: 'Free text for humans.', examples: ['Anyone with orders.read may read orders.'] }),
    action: z.enum(['allow', 'deny']).meta({
      description: 'Any matching `deny` rule refuses the call (`ERR_POLICY_DENIED`) whatever the allow rules say; otherwise the first matching `allow` rule admits it; a call no allow rule matches is refused (`ERR_POLICY_NO_MATCH`).',
      examples: ['allow'],
    }),
    match: match,
    token: z.enum(['required', 'optional']).default('required').meta({
      description: 'Allow rules only. `required`: the rule applies only to calls with a valid token (a call without one is refused with `ERR_TOKEN_MISSING`, 401). `optional`: calls without a token match too (a token that is present must still be valid); such a rule cannot have `when` conditions.',
      examples: ['optional'],
    }),
    signIn: z.enum(['browser']).optional().meta({
      description:
        'Allow rules only. `browser`: the route is a web page. A call without a bearer token may use the browser session the sidecar keeps (docs/browser-sign-in.md: the session\'s access token is checked exactly like a bearer token), and a browser with neither (`Accept: text/html`, `GET` or `HEAD`) is redirected to sign in at the provider instead of getting a 401. API and gRPC callers without a token still get 401. Needs a `session` section in the sidecar config.',
      examples: ['browser'],
    }),
    when: z.array(conditionSchema).default([]).meta({
      description: 'Conditions on the caller; all must hold (AND). Use `any:` inside for OR.',
      examples: [[{ scopes: { allOf: ['orders.read'] } }, { claim: 'tenant.id', equals: 'acme' }]],
    }),
    dryRun: z.boolean().default(false).meta({
      description: 'Record instead of enforce. A dry-run deny rule that matches does not refuse the call (the would-be denial is recorded and evaluation continues). A dry-run allow rule admits calls to its route even when its token requirement or conditions fail, recording the denial that would have happened, unless an enforced allow rule also covers the route: then that rule decides.',
      examples: [true],
    }),
  })
  .meta({ id: 'Rule', description: 'One allow or deny rule.' });

export const policySchema = z
  .strictObject({
    apiVersion: z.literal('ward.dev/v1', { error: 'must be "ward.dev/v1"' }).meta({
      description: 'Format version of this file.',
      examples: ['ward.dev/v1'],
    }),
    kind: z.literal('Policy', { error: 'must be "Policy"' }).meta({ description: 'Always `Policy`.', examples: ['Policy'] }),
    service: z.string().regex(SERVICE_NAME, 'must be a lower-case DNS-style name').meta({
      description: 'The service this policy guards; must equal the `service` of the sidecar config that loads it.',
      examples: ['orders'],
    }),
    mode: z.enum(['enforce', 'dry-run']).default('enforce').meta({
      description: '`enforce` refuses denied calls. `dry-run` lets every call through and records the denial it would have made (`dryRunDenial` on the decision): use it to roll out a new policy.',
      examples: ['dry-run'],
    }),
    issuers: z.array(issuer).default([]).meta({
      description: 'Trusted token issuers. A token from any other issuer is refused (`ERR_TOKEN_ISSUER_UNKNOWN`) before rules are looked at.',
      examples: [[{ issuer: 'https://idp.example.com', audiences: ['https://orders.example.com'] }]],
    }),
    rules: z.array(rule).max(1000, 'at most 1000 rules').default([]).meta({
      description: 'Allow and deny rules. Deny rules are checked first (all of them); allow rules in file order, first match wins. No rules = every call refused.',
      examples: [[{ name: 'readers', action: 'allow', match: { grpc: ['/ward.demo.v1.Orders/GetOrder'] }, when: [{ scopes: { allOf: ['orders.read'] } }] }]],
    }),
  })
  .meta({ title: 'ward policy', description: 'Authorization policy of one service.' });

export type PolicyFile = z.output<typeof policySchema>;
export type PolicyRule = PolicyFile['rules'][number];
export type PolicyIssuer = PolicyFile['issuers'][number];
export type PolicyHttpMatch = NonNullable<PolicyRule['match']['http']>[number];
export type PolicyCondition = PolicyConditionInput;
