import { describe, expect, it } from 'vitest';
import { defaultDevIdpConfig, isLoopbackHost, parseDevIdpConfig } from '../../../src/devidp/config.ts';
import { ConfigError, type FileIssue } from '../../../src/errors/ward-error.ts';

function issuesOf(text: string): FileIssue[] {
  try {
    parseDevIdpConfig(text, 'idp.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const BASE = `resourceServers:
  - resource: urn:ward:orders
    scopes: [orders.read]
clients:
  - clientId: frontend
    clientSecret: frontend-secret
    grantTypes: [client_credentials]
    resources:
      urn:ward:orders: [orders.read]
`;

describe('dev IdP config', () => {
  it('embeds a default config with the demo clients', () => {
    const cfg = defaultDevIdpConfig();
    expect(cfg).toMatchObject({ host: '127.0.0.1', port: 4400, signingAlg: 'RS256', retainedKeys: 2 });
    expect(cfg.clients.map((c) => c.clientId)).toEqual(['frontend', 'reporting', 'intruder', 'orders-sidecar', 'payments-sidecar', 'webapp']);
    expect(cfg.users.map((u) => u.username)).toEqual(['alice', 'bob']);
    const byId = new Map(cfg.clients.map((c) => [c.clientId, c]));
    expect(byId.get('reporting')?.resources).toEqual({ 'urn:ward:orders': ['orders.read'], 'urn:ward:orders-opaque': ['orders.read'] });
    expect(byId.get('intruder')?.resources).toEqual({ 'urn:ward:other': ['other.read'] });
    expect(cfg.resourceServers.find((r) => r.resource === 'urn:ward:orders-opaque')?.accessTokenFormat).toBe('opaque');
  });

  it('applies defaults to a minimal file', () => {
    const cfg = parseDevIdpConfig(BASE, 'idp.yaml');
    expect(cfg.resourceServers[0]).toEqual({ resource: 'urn:ward:orders', scopes: ['orders.read'], accessTokenFormat: 'jwt', accessTokenTtlSeconds: 300 });
    expect(cfg.clients[0]?.serves).toEqual([]);
  });

  it('reports an unknown field at its line and column', () => {
    const [issue, ...rest] = issuesOf(`${BASE}    colour: blue\n`);
    expect(rest).toEqual([]);
    expect(issue).toMatchObject({ file: 'idp.yaml', line: 10, column: 5, path: 'clients[0].colour' });
  });

  it('reports a scope the resource server does not define at the scope', () => {
    const text = BASE.replace('urn:ward:orders: [orders.read]', 'urn:ward:orders: [orders.read, orders.delete]');
    expect(issuesOf(text)).toEqual([
      expect.objectContaining({ line: 9, column: 38, path: 'clients[0].resources.urn:ward:orders[1]' }),
    ]);
  });

  it('reports a client resource missing from resourceServers', () => {
    const text = `${BASE}      urn:ward:nowhere: [x]\n`;
    expect(issuesOf(text)).toEqual([expect.objectContaining({ line: 10, path: 'clients[0].resources.urn:ward:nowhere' })]);
  });

  it('refuses a non-loopback host in the file', () => {
    expect(issuesOf(`host: 0.0.0.0\n${BASE}`)).toEqual([expect.objectContaining({ line: 1, column: 7, path: 'host' })]);
  });

  it('requires serves on a token-exchange client', () => {
    const text = BASE.replace('grantTypes: [client_credentials]', 'grantTypes: [token-exchange]');
    expect(issuesOf(text)).toEqual([expect.objectContaining({ path: 'clients[0].serves', line: 5 })]);
  });

  it('refuses duplicate clients and resource indicators with fragments', () => {
    const dup = `${BASE}  - clientId: frontend\n    clientSecret: another-secret\n`;
    expect(issuesOf(dup)).toEqual([expect.objectContaining({ path: 'clients[1].clientId', line: 10 })]);
    const frag = BASE.replace('  - resource: urn:ward:orders\n', '  - resource: "https://orders.example/#x"\n');
    expect(issuesOf(frag).map((i) => i.path)).toContain('resourceServers[0].resource');
  });

  it('reports YAML syntax errors with a position', () => {
    expect(issuesOf('clients: [\n')[0]).toMatchObject({ file: 'idp.yaml', line: 2 });
  });

  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['::1', true],
    ['[::1]', true],
    ['127.0.0.256', false],
    ['0.0.0.0', false],
    ['10.0.0.1', false],
    ['localhost.example.com', false],
    ['::', false],
  ])('isLoopbackHost(%s) is %s', (host, expected) => {
    expect(isLoopbackHost(host)).toBe(expected);
  });
});
