import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { decodePolicyResponse, encodePolicyRequest, type PolicyRequestWire, type PolicyResponseWire, WireError } from '../../../src/controlplane/wire.ts';

/**
 * The policy stream's codec, which the sidecar uses instead of grpc-js and protobufjs, against
 * protobufjs itself (what the control plane's grpc-js server decodes and encodes with), loaded
 * from the vendored proto: requests ward writes decode to what was sent, responses protobufjs
 * writes decode to what was sent, and bytes that are no PolicyResponse are a WireError, never
 * another exception.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => PROTO_ROOT + target;
root.loadSync('ward/v1/control_plane.proto');
const Request = root.lookupType('ward.v1.PolicyRequest');
const Response = root.lookupType('ward.v1.PolicyResponse');

/** What the server sees: the request as protobufjs decodes it (proto-loader's defaults: absent strings "", absent message null). */
function asServerSees(bytes: Buffer): PolicyRequestWire {
  const o = Request.toObject(Request.decode(bytes), { defaults: true }) as Record<string, unknown>;
  const detail = o['errorDetail'] as { code: number; message: string } | undefined;
  return {
    service: o['service'] as string,
    instanceId: o['instanceId'] as string,
    versionInfo: o['versionInfo'] as string,
    responseNonce: o['responseNonce'] as string,
    errorDetail: detail === undefined || detail === null ? null : { code: detail.code, message: detail.message },
  };
}

function responseBytes(r: Partial<Omit<PolicyResponseWire, 'policy'>> & { policy?: { fileName?: string; text?: string } }): Buffer {
  return Buffer.from(Response.encode(Response.fromObject(r)).finish());
}

const req = (over: Partial<PolicyRequestWire> = {}): PolicyRequestWire => ({
  service: 'orders',
  instanceId: 'pod-1',
  versionInfo: 'v1',
  responseNonce: 'n1',
  errorDetail: null,
  ...over,
});

describe('PolicyRequest encoding', () => {
  it('decodes in protobufjs to what was sent: ACKs, NACKs, empty and non-ASCII strings', () => {
    for (const r of [
      req(),
      req({ versionInfo: '', responseNonce: '' }),
      req({ errorDetail: { code: 3, message: 'orders.yaml:4:3: rules[0].action: Invalid option — héllo ✓' } }),
      req({ errorDetail: { code: 9, message: '' } }),
      req({ errorDetail: { code: 0, message: 'zero code' } }),
      req({ errorDetail: { code: -1, message: 'negative int32' } }),
      req({ service: '', instanceId: '' }),
      req({ instanceId: 'x'.repeat(300) }), // a two-byte length
    ]) {
      expect(asServerSees(encodePolicyRequest(r))).toEqual(r);
    }
  });

  it('writes proto3 defaults as absent: an empty request is zero bytes, a bare NACK only its message', () => {
    expect(encodePolicyRequest(req({ service: '', instanceId: '', versionInfo: '', responseNonce: '' }))).toEqual(Buffer.alloc(0));
    expect([...encodePolicyRequest(req({ service: '', instanceId: '', versionInfo: '', responseNonce: '', errorDetail: { code: 0, message: '' } }))]).toEqual([0x2a, 0x00]);
  });

  it('matches protobufjs on random requests', () => {
    const detail = fc.option(fc.record({ code: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), message: fc.string({ unit: 'grapheme', maxLength: 40 }) }), { nil: null });
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string(), fc.string(), fc.string(), detail, (service, instanceId, versionInfo, responseNonce, errorDetail) => {
        const r = { service, instanceId, versionInfo, responseNonce, errorDetail };
        expect(asServerSees(encodePolicyRequest(r))).toEqual(r);
      }),
      { numRuns: 300 },
    );
  });
});

describe('PolicyResponse decoding', () => {
  it('reads what protobufjs writes, with the shape proto-loader gives (absent strings "", absent policy null)', () => {
    const full = { versionInfo: 'sha256:ab12', nonce: '7', service: 'orders', policy: { fileName: 'orders.yaml', text: 'service: orders\n# ünïcode ✓\n' }, controlPlaneId: 'cp-1' };
    expect(decodePolicyResponse(responseBytes(full))).toEqual(full);
    expect(decodePolicyResponse(responseBytes({ versionInfo: 'v', nonce: '1', service: 'orders' }))).toEqual({ versionInfo: 'v', nonce: '1', service: 'orders', policy: null, controlPlaneId: '' });
    expect(decodePolicyResponse(responseBytes({ policy: {} }))).toEqual({ versionInfo: '', nonce: '', service: '', policy: { fileName: '', text: '' }, controlPlaneId: '' });
    expect(decodePolicyResponse(Buffer.alloc(0))).toEqual({ versionInfo: '', nonce: '', service: '', policy: null, controlPlaneId: '' });
    const big = 'x'.repeat(200_000);
    expect(decodePolicyResponse(responseBytes({ policy: { fileName: 'f', text: big } })).policy?.text).toBe(big);
  });

  it('skips fields it does not know, of every wire type, at the top and inside the policy (a newer control plane)', () => {
    const known = responseBytes({ versionInfo: 'v2', service: 'orders', policy: { fileName: 'a.yaml', text: 't' } });
    const w = protobuf.Writer.create();
    w.uint32((9 << 3) | 0).uint64(2 ** 40); // varint
    w.uint32((10 << 3) | 1).fixed64(5); // i64
    w.uint32((11 << 3) | 2).bytes(Buffer.from([1, 2, 3])); // len
    w.uint32((12 << 3) | 5).fixed32(7); // i32
    const unknown = Buffer.from(w.finish());
    const policyWithUnknown = Buffer.concat([Buffer.from([0x0a, 1, 0x62]), unknown]); // fileName "b", then the unknowns
    const bytes = Buffer.concat([unknown, known, Buffer.from([0x22, policyWithUnknown.length]), policyWithUnknown]);
    // the later `policy` field replaces the earlier one, as protobufjs does for a non-repeated message
    expect(decodePolicyResponse(bytes)).toEqual({ versionInfo: 'v2', nonce: '', service: 'orders', policy: { fileName: 'b', text: '' }, controlPlaneId: '' });
  });

  it('refuses malformed bytes with a WireError: truncation, groups, field 0, wrong wire types, invalid UTF-8', () => {
    const ok = responseBytes({ versionInfo: 'v1', service: 'orders', policy: { fileName: 'a', text: 'b' } });
    const cases: [string, Buffer][] = [
      ['truncated', ok.subarray(0, ok.length - 1)],
      ['truncated varint', Buffer.from([0x08, 0x80])],
      ['varint over 10 bytes', Buffer.from([0x08, ...Array<number>(11).fill(0x80), 0x01])],
      ['length past the end', Buffer.from([0x0a, 0x05, 0x61])],
      ['start group', Buffer.from([0x0b])],
      ['end group', Buffer.from([0x0c])],
      ['field 0', Buffer.from([0x02, 0x00])],
      ['a string as a varint', Buffer.from([0x08, 0x01])],
      ['policy as a varint', Buffer.from([0x20, 0x01])],
      ['invalid UTF-8', Buffer.from([0x0a, 0x02, 0xc3, 0x28])],
      ['invalid UTF-8 in the policy text', Buffer.from([0x22, 0x04, 0x12, 0x02, 0xff, 0xfe])],
      ['truncated i64', Buffer.from([0x49, 0x01, 0x02])],
    ];
    for (const [name, bytes] of cases) expect(() => decodePolicyResponse(bytes), name).toThrow(WireError);
  });

  it('never throws anything but a WireError, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodePolicyResponse(Buffer.from(bytes));
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
