import { describe, expect, it } from 'vitest';
import { formatStatus } from '../../../src/controlplane/client/status.ts';
import type { StatusResponseWire } from '../../../src/controlplane/proto.ts';

const T = Date.UTC(2026, 10, 26, 10, 0, 0);
const issue = { file: 'payments.yaml', line: 9, column: 13, path: 'rules[0].action', message: 'Invalid option' };

const STATUS: StatusResponseWire = {
  controlPlaneId: 'cp-0',
  policyDir: '/etc/ward/policies',
  startedAtUnixMs: T,
  services: [
    { service: 'orders', version: 'a'.repeat(64), sourceFile: 'orders.yaml', updatedAtUnixMs: T, lastError: [] },
    { service: 'payments', version: 'b'.repeat(64), sourceFile: 'payments.yaml', updatedAtUnixMs: T, lastError: [issue, { ...issue, line: 12 }] },
  ],
  files: [
    { file: 'broken.yaml', service: '', issues: [{ ...issue, file: 'broken.yaml', line: 1, column: 1, path: '' }], sinceUnixMs: T },
    { file: 'payments.yaml', service: 'payments', issues: [issue], sinceUnixMs: T },
  ],
  sidecars: [
    { service: 'orders', instanceId: 'orders-7f9c', subject: 'orders-sidecar', issuer: 'http://idp', peer: '10.0.0.5:40000', ackedVersion: 'a'.repeat(64), pendingVersion: '', lastNack: null, nackCount: 0, connectedSinceUnixMs: T },
    { service: 'payments', instanceId: 'payments-1', subject: 'payments-sidecar', issuer: 'http://idp', peer: '10.0.0.6:40000', ackedVersion: '', pendingVersion: 'b'.repeat(64), lastNack: { version: 'c'.repeat(64), message: 'payments.yaml:5:3: needs secret\nsecond line', atUnixMs: T }, nackCount: 1, connectedSinceUnixMs: T },
  ],
};

describe('formatStatus', () => {
  it('renders services, refused files and sidecars as aligned tables', () => {
    expect(formatStatus(STATUS)).toBe(`control plane cp-0  policy dir /etc/ward/policies  started 2026-11-26T10:00:00Z

SERVICES
SERVICE   VERSION       SOURCE         UPDATED               LAST ERROR
orders    aaaaaaaaaaaa  orders.yaml    2026-11-26T10:00:00Z  -
payments  bbbbbbbbbbbb  payments.yaml  2026-11-26T10:00:00Z  payments.yaml:9:13: rules[0].action: Invalid option (+1 more)

REFUSED FILES (the previous valid version of their service stays in force)
FILE           SERVICE   SINCE                 ERROR
broken.yaml    -         2026-11-26T10:00:00Z  broken.yaml:1:1: Invalid option
payments.yaml  payments  2026-11-26T10:00:00Z  payments.yaml:9:13: rules[0].action: Invalid option

SIDECARS
SERVICE   INSTANCE     SUBJECT           ACKED         PENDING       CONNECTED SINCE       LAST NACK
orders    orders-7f9c  orders-sidecar    aaaaaaaaaaaa  -             2026-11-26T10:00:00Z  -
payments  payments-1   payments-sidecar  -             bbbbbbbbbbbb  2026-11-26T10:00:00Z  cccccccccccc: payments.yaml:5:3: needs secret …
`);
  });

  it('says so when nothing is served or connected', () => {
    const out = formatStatus({ ...STATUS, services: [], files: [], sidecars: [] });
    expect(out).toContain('SERVICES\n  (none)');
    expect(out).toContain('SIDECARS\n  (none connected)');
    expect(out).not.toContain('REFUSED FILES');
  });
});
