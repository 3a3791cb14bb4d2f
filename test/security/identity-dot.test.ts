import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RecordingApp } from './support/app.ts';
import { h1raw } from './support/h1raw.ts';
import { h2Once, startTwoWards, type TwoWards, type Ward } from './support/ward.ts';

/**
 * Identity spoofing through a field name PHP reads as an identity header. PHP builds
 * `$_SERVER['HTTP_…']` from a request field as CGI does (upper case, `-` -> `_`) and then registers
 * it through `php_register_variable_ex`, which also turns `.` (and space) into `_`
 * (main/php_variables.c; the built-in server `php -S` passes header names through as they are,
 * and so does any FastCGI front end that keeps `.`, e.g. Caddy's `php_fastcgi`). So
 * `X.Ward.Subject: root` reaches a PHP app as `$_SERVER['HTTP_X_WARD_SUBJECT'] = 'root'`, exactly as
 * `X_Ward_Subject` would — the spelling ward already strips (README "What the app receives",
 * SECURITY.md guarantee 5, headers.ts `impersonatesIdentity` naming PHP's `$_SERVER`). Found in review; regression.
 * `.` is an RFC 9110 tchar, legal in both HTTP/1.1 and HTTP/2 names.
 */

/** The `$_SERVER` key PHP gives a request field (CGI mapping, then php_register_variable_ex's mangling). */
function phpServerKey(field: string): string {
  return `HTTP_${field.toUpperCase().replaceAll('-', '_').replaceAll('.', '_').replaceAll(' ', '_')}`;
}
const IDENTITY_KEYS = ['HTTP_X_WARD_SUBJECT', 'HTTP_X_WARD_ISSUER', 'HTTP_X_WARD_CLAIMS'];


let rig: TwoWards;
let h2app: RecordingApp;
let h1app: RecordingApp;
let wardH2: Ward;
let wardH1: Ward;

beforeAll(async () => {
  rig = await startTwoWards();
  ({ h2app, h1app, wardH2, wardH1 } = rig);
});
afterAll(() => rig.close());
beforeEach(() => rig.reset());

describe.each([
  ['h2c app', () => wardH2, () => h2app],
  ['HTTP/1.1 app', () => wardH1, () => h1app],
] as const)('identity fields spelled with `.` (PHP reads x.ward.subject as HTTP_X_WARD_SUBJECT) never reach the %s', (_name, ward, app) => {
  it('anonymous caller on an open route, HTTP/1.1 and HTTP/2: no forwarded field becomes a PHP identity variable', async () => {
    const x = await h1raw(
      ward().port,
      'GET /public/x HTTP/1.1\r\nHost: orders\r\nX.Ward.Subject: root\r\nX.WARD.ISSUER: https://evil.example\r\nx-ward.claims: eyJzdWIiOiJyb290In0\r\nConnection: close\r\n\r\n',
    );
    expect(x.replies[0]?.status).toBe(200);
    const r = await h2Once(ward().port, { ':path': '/public/x', 'x.ward.subject': 'root', 'x-ward.issuer': 'https://evil.example' });
    expect(r.status).toBe(200);
    expect(app().seen).toHaveLength(2);
    for (const seen of app().seen) {
      const php = Object.keys(seen.headers).filter((n) => !n.startsWith(':') && IDENTITY_KEYS.includes(phpServerKey(n)));
      expect(php).toEqual([]);
    }
  });
});
