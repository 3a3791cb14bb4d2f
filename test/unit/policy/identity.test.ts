import { describe, expect, it } from 'vitest';
import { identityFromClaims, MAX_ACT_DEPTH } from '../../../src/policy/identity.ts';

describe('identityFromClaims', () => {
  it('maps iss, sub, exp, scope and the act chain', () => {
    const claims = {
      iss: 'https://idp.example.com',
      sub: 'alice',
      exp: 1_700_000_300,
      scope: 'orders.read  orders.write',
      act: { sub: 'orders', act: { sub: 'frontend' } },
    };
    const id = identityFromClaims(claims);
    expect(id).toMatchObject({ issuer: 'https://idp.example.com', subject: 'alice', expiresAt: 1_700_000_300, tokenKind: 'jwt', actors: ['orders', 'frontend'] });
    expect([...id.scopes]).toEqual(['orders.read', 'orders.write']);
    expect(id.claims).toBe(claims);
    expect(Object.isFrozen(id)).toBe(true);
  });

  it('falls back to client_id for the subject and to the given issuer', () => {
    const id = identityFromClaims({ client_id: 'svc-a', scp: ['a', 'b'] }, 'https://fallback.example', 'opaque');
    expect(id).toMatchObject({ issuer: 'https://fallback.example', subject: 'svc-a', tokenKind: 'opaque', actors: [] });
    expect([...id.scopes]).toEqual(['a', 'b']);
  });

  it('ends the act chain at a link without a subject, and bounds its depth', () => {
    expect(identityFromClaims({ act: { sub: 'a', act: { foo: 1, act: { sub: 'c' } } } }).actors).toEqual(['a']);
    expect(identityFromClaims({ act: { client_id: 'x' } }).actors).toEqual([]);
    let deep: Record<string, unknown> = { sub: 'last' };
    for (let i = 0; i < 100; i++) deep = { sub: `a${i}`, act: deep };
    expect(identityFromClaims({ act: deep }).actors).toHaveLength(MAX_ACT_DEPTH);
  });

  it('reads scope before scp, like authn', () => {
    expect([...identityFromClaims({ scope: 'a', scp: ['b'] }).scopes]).toEqual(['a']);
    expect([...identityFromClaims({ scp: 'b c' }).scopes]).toEqual(['b', 'c']);
  });

  it('ignores malformed scope and act values', () => {
    const id = identityFromClaims({ scope: 42, act: 'frontend', exp: 'soon' });
    expect(id.scopes.size).toBe(0);
    expect(id.actors).toEqual([]);
    expect(id.expiresAt).toBe(0);
    expect(id.subject).toBe('');
  });
});
