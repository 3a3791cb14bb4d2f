import { describe, expect, it } from 'vitest';
import { isLoopbackAddress, isLoopbackHttp } from '../../../src/authn/fetch.ts';

describe('loopback: where cleartext crosses no network', () => {
  it.each([
    ['127.0.0.1:15010', true],
    ['127.1.2.3:1', true],
    ['localhost:15010', true],
    ['[::1]:15010', true],
    ['10.0.0.1:15010', false],
    ['ward-control-plane.ward-system.svc:15010', false],
    ['127.0.0.1.nip.io:15010', false],
    ['[::ffff:127.0.0.1]:15010', false],
    ['localhost.evil.test:15010', false],
  ])('gRPC address %s: %s', (address, loopback) => {
    expect(isLoopbackAddress(address)).toBe(loopback);
  });

  it.each([
    ['http://127.0.0.1:8080/jwks', true],
    ['http://localhost/jwks', true],
    ['http://[::1]:8080/jwks', true],
    ['https://127.0.0.1/jwks', false],
    ['http://idp.example/jwks', false],
  ])('URL %s: %s', (url, loopback) => {
    expect(isLoopbackHttp(new URL(url))).toBe(loopback);
  });
});
