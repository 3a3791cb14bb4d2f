import { describe, expect, it } from 'vitest';
import { formatStatus } from '../../../src/controlplane/client/status.ts';
import type { StatusResponseWire } from '../../../src/controlplane/proto.ts';

/**
 * Regression (review, sixteenth session): `ward status` printed what the control plane returned
 * verbatim, some of it from whatever a sidecar sent. A newline forged table rows, an ANSI escape
 * rewrote the operator's terminal. Every printed value now shows control characters (and bidi
 * overrides) as escapes. The control plane also refuses such instance ids (stream-input.test.ts);
 * this covers a control plane that does not (an older build) and every other cell.
 */

const T = Date.UTC(2026, 10, 26, 10, 0, 0);
const EVIL = 'x\n\r\t\x1b[2J\x07\x7f\u009b\u202e';
const SHOWN = 'x\\n\\r\\t\\x1b[2J\\x07\\x7f\\x9b\\u202e';

const STATUS: StatusResponseWire = {
  controlPlaneId: `cp-${EVIL}`,
  policyDir: `/etc/${EVIL}`,
  startedAtUnixMs: T,
  services: [{ service: `orders${EVIL}`, version: 'a'.repeat(64), sourceFile: `orders${EVIL}.yaml`, updatedAtUnixMs: T, lastError: [{ file: `f${EVIL}`, line: 1, column: 1, path: 'p', message: `m${EVIL}` }] }],
  files: [{ file: `b${EVIL}.yaml`, service: `s${EVIL}`, issues: [{ file: 'b.yaml', line: 1, column: 1, path: '', message: `bad${EVIL}` }], sinceUnixMs: T }],
  sidecars: [
    {
      service: 'orders',
      instanceId: `pod-1\npayments  pod-7  payments-sidecar  0123456789ab  -  2026-01-01T00:00:00Z  -\x1b[2J`,
      subject: `sub${EVIL}`,
      issuer: 'http://idp',
      peer: '10.0.0.5:40000',
      ackedVersion: `\x1b[31m${'a'.repeat(60)}`,
      pendingVersion: '',
      lastNack: { version: 'c'.repeat(64), message: `needs \x1b[2Jsecret\nsecond line`, atUnixMs: T },
      nackCount: 1,
      connectedSinceUnixMs: T,
    },
  ],
};

describe('formatStatus: values the control plane returned', () => {
  const out = formatStatus(STATUS);

  it('contain no control character a terminal would act on', () => {
    // eslint-disable-next-line no-control-regex -- the point of the test
    expect(out.replace(/\n/g, '')).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  });

  it('keep one line per row: a newline in an instance id forges no row', () => {
    const sidecarRows = out.slice(out.indexOf('SIDECARS')).trim().split('\n').slice(2); // title, header
    expect(sidecarRows).toHaveLength(1);
    expect(sidecarRows[0]).toContain('pod-1\\npayments  pod-7');
    const fileRows = out.slice(out.indexOf('REFUSED FILES'), out.indexOf('SIDECARS')).trim().split('\n').slice(2);
    expect(fileRows).toHaveLength(1);
  });

  it('show each control character as an escape, in every cell and the title line', () => {
    expect(out.split('\n')[0]).toBe(`control plane cp-${SHOWN}  policy dir /etc/${SHOWN}  started 2026-11-26T10:00:00Z`);
    for (const cell of [`orders${SHOWN}`, `orders${SHOWN}.yaml`, `f${SHOWN}:1:1: p: m${SHOWN}`, `b${SHOWN}.yaml`, `s${SHOWN}`, `bad${SHOWN}`, `sub${SHOWN}`]) {
      expect(out).toContain(cell);
    }
    expect(out).toContain('\\x1b[31maaaa'); // a version, shortened to 12 characters first
    expect(out).toContain('cccccccccccc: needs \\x1b[2Jsecret …'); // the NACK: first line, escaped
  });
});
