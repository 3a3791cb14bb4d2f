import { describe, expect, it } from 'vitest';
import { resolveTelemetry, type TelemetryConfig } from '../../../src/config/telemetry.ts';
import { parseSidecarConfig } from '../../../src/config/sidecar.ts';
import { ConfigError } from '../../../src/errors/ward-error.ts';

/**
 * Export headers that cannot be sent are a start-up error naming the variable or the field
 * (docs/telemetry.md, Configuration). Regression (review, sixteenth session): only `key=value`
 * and the percent-encoding were checked, so a value with a CR or LF, a name with a space or a
 * pseudo-header name was accepted, and then every export failed: the whole decision trail lost,
 * visible only in `ward_telemetry_dropped_total{reason="export_failed"}`.
 */

const ctx = { service: 'orders', file: '/etc/ward/sidecar.yaml', baseDir: '/etc/ward' };
const cp = { ...ctx, controlPlane: { address: 'cp.ward-system:15010', tls: false } };
const SECRET = 'sEcReT-42';

/** The ConfigError's text, or 'accepted'. */
function refusal(cfg: TelemetryConfig, env: Record<string, string>, c: typeof ctx = ctx): string {
  try {
    resolveTelemetry(cfg, c, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  return 'accepted';
}

describe('OTLP export headers', () => {
  it.each([
    ['a value with a line feed', 'OTEL_EXPORTER_OTLP_HEADERS', `x-api-key=${SECRET}%0Adef`],
    ['a value with CR LF', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', `x-api-key=${SECRET}%0D%0Ax-evil: 1`],
    ['a value with a tab', 'OTEL_EXPORTER_OTLP_HEADERS', `x-api-key=${SECRET}%09x`],
    ['a value with a non-ASCII character', 'OTEL_EXPORTER_OTLP_HEADERS', `x-api-key=${SECRET}%C3%A9`],
    ['a value with a leading space', 'OTEL_EXPORTER_OTLP_HEADERS', `x-api-key=%20${SECRET}`],
    ['a value with a trailing space', 'OTEL_EXPORTER_OTLP_LOGS_HEADERS', `x-api-key=${SECRET}%20`],
    ['a name with a space', 'OTEL_EXPORTER_OTLP_HEADERS', `x api key=${SECRET}`],
    ['a pseudo-header name', 'OTEL_EXPORTER_OTLP_HEADERS', `:path=/${SECRET}`],
    ['a name with a colon', 'OTEL_EXPORTER_OTLP_HEADERS', `x-evil:1=${SECRET}`],
    ['content-type (the exporter sets it)', 'OTEL_EXPORTER_OTLP_HEADERS', `Content-Type=${SECRET}`],
    ['te (the exporter sets it)', 'OTEL_EXPORTER_OTLP_HEADERS', `te=${SECRET}`],
    ['grpc-timeout (the exporter sets it)', 'OTEL_EXPORTER_OTLP_HEADERS', `grpc-timeout=${SECRET}`],
    ['another grpc-* name (reserved by gRPC)', 'OTEL_EXPORTER_OTLP_HEADERS', `grpc-encoding=${SECRET}`],
    ['a connection-specific field (RFC 9113 §8.2.2)', 'OTEL_EXPORTER_OTLP_HEADERS', `connection=${SECRET}`],
    ['host', 'OTEL_EXPORTER_OTLP_HEADERS', `host=${SECRET}`],
    ['a -bin name (binary metadata)', 'OTEL_EXPORTER_OTLP_HEADERS', `x-key-bin=${SECRET}`],
  ])('%s is a start-up error naming the variable, not showing the value', (_what, variable, value) => {
    const text = refusal({ endpoint: '127.0.0.1:4317' }, { [variable]: value });
    expect(text).toContain(`(environment):1:1: ${variable}: `);
    expect(text).not.toContain(SECRET);
  });

  it.each([
    ['a line feed', { 'x-api-key': `${SECRET}\ndef` }, 'telemetry.headers.x-api-key'],
    ['a carriage return', { 'x-api-key': `${SECRET}\r` }, 'telemetry.headers.x-api-key'],
    ['a trailing space', { 'x-api-key': `${SECRET} ` }, 'telemetry.headers.x-api-key'],
    ['a reserved name', { te: SECRET }, 'telemetry.headers.te'],
    ['a name that is not a field name', { 'X Key': SECRET }, 'telemetry.headers.X Key'],
  ])('telemetry.headers with %s is a start-up error at its field, not showing the value', (_what, headers, path) => {
    const text = refusal({ endpoint: '127.0.0.1:4317', headers }, {});
    expect(text).toContain(`/etc/ward/sidecar.yaml:1:1: ${path}: `);
    expect(text).not.toContain(SECRET);
  });

  it('the config file schema refuses the same (at the field, with its line)', () => {
    const base = 'service: orders\ninbound:\n  listen: { port: 15006 }\nupstream:\n  url: http://127.0.0.1:8080\npolicy:\n  file: policy.yaml\n';
    const errorOf = (telemetry: string): string => {
      try {
        parseSidecarConfig(`${base}telemetry:\n${telemetry}`, '/cfg/sidecar.yaml');
      } catch (e) {
        if (e instanceof ConfigError) return e.message;
        throw e;
      }
      return 'accepted';
    };
    expect(errorOf(`  headers: { x-api-key: "${SECRET}\\ndef" }\n`)).toMatch(/sidecar\.yaml:9:\d+: telemetry\.headers\.x-api-key: /);
    expect(errorOf(`  headers: { grpc-timeout: "1S" }\n`)).toMatch(/sidecar\.yaml:9:\d+: telemetry\.headers\.grpc-timeout: /);
    expect(errorOf(`  headers: { x-api-key: "${SECRET}" }\n`)).toBe('accepted');
  });

  it('authorization is refused on a signal exported to the control plane (which is sent the sidecar token), allowed to a collector', () => {
    expect(refusal({}, { OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${SECRET}` }, cp)).toContain("OTEL_EXPORTER_OTLP_HEADERS: 'authorization' is set by the sidecar");
    // With only traces sent to a collector, the general variable would reach the control plane too.
    expect(refusal({}, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4317', OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${SECRET}` }, cp)).not.toBe('accepted');
    const r = resolveTelemetry({}, cp, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4317', OTEL_EXPORTER_OTLP_TRACES_HEADERS: `Authorization=Bearer%20${SECRET}` });
    expect(r.traces?.headers).toEqual({ authorization: `Bearer ${SECRET}` });
    expect(r.logs?.headers).toEqual({});
  });

  it('sendable headers are accepted: names lower-cased, values percent-decoded, inner spaces kept, empty allowed', () => {
    const r = resolveTelemetry({ endpoint: '127.0.0.1:4317', headers: { 'x-from-file': 'a b' } }, ctx, { OTEL_EXPORTER_OTLP_HEADERS: 'X-Api-Key=s%20ecret%21,x-tenant.id=acme_1,x-empty=', OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'x-only-logs=1' });
    expect(r.traces?.headers).toEqual({ 'x-api-key': 's ecret!', 'x-tenant.id': 'acme_1', 'x-empty': '', 'x-from-file': 'a b' });
    expect(r.logs?.headers).toEqual({ 'x-api-key': 's ecret!', 'x-tenant.id': 'acme_1', 'x-empty': '', 'x-only-logs': '1', 'x-from-file': 'a b' });
  });
});
