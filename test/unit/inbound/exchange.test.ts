import { describe, expect, it } from 'vitest';
import type { H2ClientStream } from '../../../src/h2/conn.ts';
import { Exchange } from '../../../src/inbound/exchange.ts';
import type { Identity } from '../../../src/policy/model.ts';

function exchange(): Exchange {
  return new Exchange({
    h2: null,
    req: null,
    res: null,
    grpc: true,
    decisionId: 'd-1',
    method: 'POST',
    target: '/pkg.Svc/Call',
    authority: 'svc',
    rawHeaders: [':method', 'POST', ':path', '/pkg.Svc/Call', 'authorization', 'Bearer x'],
    bodyless: false,
    expectContinue: false,
  });
}

describe('Exchange.release (the caller\'s stream closed)', () => {
  it('drops what it holds of the call, and what the span and decision record read stays', () => {
    const ex = exchange();
    ex.fwdHeaders = { 'x-ward-subject': 'alice' };
    ex.identity = { sub: 'alice' } as unknown as Identity;
    ex.replay = [Buffer.from('body')];
    ex.requestTrailers = { 'x-t': '1' };
    ex.trailers = { 'grpc-status': '0' };
    ex.relayedStatus = 200;
    ex.upstreamError = new Error('kept');
    ex.release();
    expect(ex.rawHeaders).toEqual([]);
    expect(Object.isFrozen(ex.rawHeaders)).toBe(true);
    expect(ex.fwdHeaders).toEqual({});
    expect(ex.identity).toBeNull();
    expect(ex.replay).toBeNull();
    expect(ex.replayOff).toBe(true);
    expect(ex.requestTrailers).toBeNull();
    expect(ex.trailers).toBeNull();
    expect(ex.decisionId).toBe('d-1');
    expect(ex.relayedStatus).toBe(200);
    expect(ex.upstreamError?.message).toBe('kept');
    // A later write into the headers (there should be none) cannot reach another call's object.
    ex.fwdHeaders['x'] = 'y';
    expect(exchange().fwdHeaders).toEqual({});
  });

  it('keeps an upstream stream still open (its close handler needs it), and drops a closed one', () => {
    const open = exchange();
    const up = { closed: false } as unknown as H2ClientStream;
    open.upstream = up;
    open.release();
    expect(open.upstream).toBe(up);
    const done = exchange();
    done.upstream = { closed: true } as unknown as H2ClientStream;
    done.release();
    expect(done.upstream).toBeNull();
  });
});
