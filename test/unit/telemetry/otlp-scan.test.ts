import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import type { LogRecordWire } from '../../../src/controlplane/server/otlp/proto.ts';
import { decisionOf } from '../../../src/controlplane/server/otlp/receiver.ts';
import { scanLogsRequest } from '../../../src/controlplane/server/otlp/scan.ts';
import { WireError } from '../../../src/controlplane/wire.ts';
import { prng } from '../../support/prng.ts';

/**
 * The control plane reads decision records off an OTLP logs request in place (scan.ts) instead
 * of decoding it whole with protobufjs, which turned a 1 MiB request of empty records into
 * ~340 MB of heap (found in review; regression). It must read what the full decoder read.
 */

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => fileURLToPath(new URL(`../../../proto/${target}`, import.meta.url));
root.loadSync('opentelemetry/proto/collector/logs/v1/logs_service.proto');
const Request = root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest');

function scanned(buf: Buffer): unknown[] {
  const out: unknown[] = [];
  scanLogsRequest(buf, (lr, instanceId) => out.push(decisionOf(lr, instanceId)));
  return out.filter((d) => d !== null);
}

/** What the receiver read before: protobufjs, proto-loader's options. */
function decodedWhole(buf: Buffer): unknown[] {
  const req = Request.toObject(Request.decode(buf), { longs: String, enums: Number, defaults: true, oneofs: true, bytes: Buffer }) as {
    resourceLogs: { resource?: { attributes: { key: string; value: { value?: string; stringValue?: string } }[] }; scopeLogs: { logRecords: LogRecordWire[] }[] }[];
  };
  const out: unknown[] = [];
  for (const rl of req.resourceLogs) {
    const inst = rl.resource?.attributes.find((a) => a.key === 'service.instance.id')?.value.stringValue ?? '';
    for (const sl of rl.scopeLogs) for (const lr of sl.logRecords) out.push(decisionOf({ ...lr, traceId: Buffer.from(lr.traceId), spanId: Buffer.from(lr.spanId) }, inst));
  }
  return out.filter((d) => d !== null);
}

const str = (key: string, v: string) => ({ key, value: { stringValue: v } });

describe('scanLogsRequest', () => {
  it('reads the same decision records as the whole decode did, on random requests', () => {
    const rnd = prng(7);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    for (let round = 0; round < 200; round++) {
      const resourceLogs = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => ({
        resource: rnd() < 0.8 ? { attributes: [str('service.name', 'orders'), str('ward.service', 'orders'), ...(rnd() < 0.8 ? [str('service.instance.id', `pod-${Math.floor(rnd() * 9)}`)] : [])] } : undefined,
        scopeLogs: Array.from({ length: Math.floor(rnd() * 3) }, () => ({
          scope: { name: 'ward' },
          logRecords: Array.from({ length: Math.floor(rnd() * 5) }, () => ({
            timeUnixNano: rnd() < 0.9 ? String(1_700_000_000_000_000_000n + BigInt(Math.floor(rnd() * 1e9))) : undefined,
            observedTimeUnixNano: String(1_700_000_000_500_000_000n),
            severityNumber: 9,
            body: { stringValue: 'allow /x' },
            eventName: pick(['ward.decision', '', 'other.event']),
            traceId: rnd() < 0.7 ? Buffer.alloc(16, Math.floor(rnd() * 255) + 1) : undefined,
            spanId: rnd() < 0.7 ? Buffer.alloc(8, 3) : Buffer.alloc(0),
            attributes: [
              ...(rnd() < 0.9 ? [str('ward.decision', pick(['allow', 'deny']))] : []),
              ...(rnd() < 0.9 ? [str('ward.service', pick(['orders', 'payments', '']))] : []),
              str('ward.reason', pick(['', 'ERR_POLICY_DENIED'])),
              str('ward.route', '/ward.demo.v1.Orders/GetOrder'),
              str('enduser.id', pick(['alice', 'bob\u00e9'])),
              str('http.request.method', 'POST'),
              str('unrelated.key', 'x'.repeat(Math.floor(rnd() * 40))),
              { key: 'ward.cached', value: { boolValue: rnd() < 0.5 } },
              { key: 'http.response.status_code', value: { intValue: 200 } },
              { key: 'ward.ratio', value: { doubleValue: 0.25 } },
              { key: 'ward.list', value: { arrayValue: { values: [{ stringValue: 'a' }] } } },
            ].sort(() => rnd() - 0.5),
          })),
        })),
      }));
      const buf = Buffer.from(Request.encode(Request.fromObject({ resourceLogs })).finish());
      expect(scanned(buf), `round ${round}`).toEqual(decodedWhole(buf));
    }
  });

  it('a 1 MiB request of empty records costs no heap to speak of, and visits nothing', () => {
    const n = 500_000;
    const recs = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) recs[2 * i] = 0x12; // ScopeLogs.log_records, length 0
    const len = (tag: number, b: Buffer): Buffer => {
      const l: number[] = [];
      let v = b.length;
      while (v >= 0x80) {
        l.push((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      l.push(v);
      return Buffer.concat([Buffer.from([tag, ...l]), b]);
    };
    const msg = len(0x0a, len(0x12, recs));
    const before = process.memoryUsage().heapUsed;
    let visited = 0;
    scanLogsRequest(msg, () => visited++);
    expect(visited).toBe(0);
    // The whole decode held ~300 times the message.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(8 * msg.length);
  });

  it('a truncated request, or a key that is not UTF-8, is malformed', () => {
    const good = Buffer.from(Request.encode(Request.fromObject({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ attributes: [str('ward.decision', 'allow'), str('ward.service', 'orders')] }] }] }] })).finish());
    expect(scanned(good)).toHaveLength(1);
    expect(() => scanned(good.subarray(0, good.length - 3))).toThrow(WireError);
    const bad = Buffer.from(good);
    bad[bad.indexOf(Buffer.from('ward.decision')) + 6] = 0xff;
    expect(() => scanned(bad)).toThrow(WireError);
  });
});
