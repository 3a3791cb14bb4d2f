import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';

/**
 * Shared HMAC secrets on disk, as a Kubernetes Secret volume or a plain file holds them, and
 * HS256 tokens signed with them. Used by the policy-source and control-plane rotation tests.
 */

export const HMAC_ISSUER = 'https://hmac-idp.example.com';
export const HMAC_AUDIENCE = 'urn:ward:orders';

/** Three 32-byte (HS256-sized) secrets, and one too short for HS256 (RFC 7518 §3.2). */
export const SECRET_A = 'secret-A-0123456789abcdef-32byte';
export const SECRET_B = 'secret-B-0123456789abcdef-32byte';
export const SECRET_C = 'secret-C-0123456789abcdef-32byte';
export const SHORT_SECRET = 'short-secret-16b';

/** A policy for `orders` trusting one HS256 issuer whose secret is `hmacSecretFile: <secretRef>`. */
export function hmacPolicy(secretRef: string, methods: readonly string[] = ['GetOrder']): string {
  return `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: ${HMAC_ISSUER}
    audiences: [${HMAC_AUDIENCE}]
    algorithms: [HS256]
    discovery: false
    hmacSecretFile: ${secretRef}
rules:
  - name: readers
    action: allow
    match:
      grpc: [${methods.map((m) => `/ward.demo.v1.Orders/${m}`).join(', ')}]
`;
}

let jti = 0;
/** An RFC 9068 access token of `HMAC_ISSUER` for `HMAC_AUDIENCE`, 5 minutes left, signed HS256 with `secret`. */
export function hs256(secret: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: HMAC_ISSUER, sub: 'alice', aud: HMAC_AUDIENCE, client_id: 'web', iat: now, exp: now + 300, jti: `h${++jti}` })
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
    .sign(new TextEncoder().encode(secret));
}

/** A directory holding one secret file, `hmac.key`, and a way to replace its content. */
export interface SecretDir {
  readonly dir: string;
  /** The path a policy names (`<dir>/hmac.key`). */
  readonly file: string;
  replace(content: string): void;
  remove(): void;
  cleanup(): void;
}

/** `hmac.key` as a plain file, replaced by rewriting it in place (an editor, `echo > file`). */
export function plainSecretDir(content: string): SecretDir {
  const dir = mkdtempSync(join(tmpdir(), 'ward-secret-'));
  const file = join(dir, 'hmac.key');
  writeFileSync(file, content);
  return {
    dir,
    file,
    replace: (c) => writeFileSync(file, c),
    remove: () => rmSync(file),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * `hmac.key` as the kubelet lays out a Secret volume: `hmac.key -> ..data/hmac.key`,
 * `..data -> ..<generation>/`. A new content is a new generation directory and an atomic
 * rename of a temp symlink over `..data`; `hmac.key` itself is never touched, and the old
 * generation is removed afterwards, as the kubelet does.
 */
export function kubeletSecretDir(content: string): SecretDir {
  const dir = mkdtempSync(join(tmpdir(), 'ward-secret-k8s-'));
  let gen = 0;
  let live: string | null = null;
  const publish = (files: Record<string, string>): void => {
    const name = `..2030_03_17_17_46_40.${++gen}`;
    mkdirSync(join(dir, name));
    for (const [f, c] of Object.entries(files)) writeFileSync(join(dir, name, f), c);
    symlinkSync(name, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    if (live !== null) rmSync(join(dir, live), { recursive: true, force: true });
    live = name;
  };
  publish({ 'hmac.key': content });
  symlinkSync(join('..data', 'hmac.key'), join(dir, 'hmac.key'));
  return {
    dir,
    file: join(dir, 'hmac.key'),
    replace: (c) => publish({ 'hmac.key': c }),
    // the key removed from the Secret: `hmac.key` dangles
    remove: () => publish({}),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
