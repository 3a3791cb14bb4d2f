import * as grpc from '@grpc/grpc-js';
import { ERROR_TABLE } from '../../errors/table.ts';
import type { ErrorCode } from '../../errors/codes.ts';
import type { Logger } from '../../lib/log.ts';
import { tokenHash } from '../../lib/hash.ts';
import { type Authenticate, type AuthResult, bearerFromMetadata, isLoopbackPeer } from './access.ts';

/**
 * The control plane's bearer check before a call's first message is read.
 *
 * grpc-js reads a unary call's whole request (up to `telemetry.maxMessageBytes`, 4 MiB by
 * default) before the handler runs, and each handler authenticated only then: anyone who could
 * reach the port made the control plane buffer and decode megabytes per call without a token
 * (found in review). This interceptor runs on the request headers and holds the call's reads
 * until the bearer token is valid, so a caller without one costs the HTTP/2 stream window
 * (64 KiB) at most, and gets its status at once.
 *
 * It refuses only what every handler refuses: a call without a token from a peer that is not
 * loopback, and a call whose token does not authenticate. A loopback call without a token goes
 * on: whether it may do without one is the handler's setting (`allowLoopbackWithoutToken`). The
 * handlers keep their own checks (bindings, subjects); the token they check again is a hit in
 * the authenticator's cache. grpc.health.v1 is never authenticated (the kubelet's probe).
 */
export function preAuthInterceptor(authenticator: Authenticate, log: Logger): grpc.ServerInterceptor {
  return (method, next) => {
    if (method.path.startsWith('/grpc.health.v1.Health/')) return new grpc.ServerInterceptingCall(next);
    return gated(next, method.path, authenticator, log);
  };
}

/** One call whose metadata and reads are held until its bearer check settles. */
function gated(next: grpc.ServerInterceptingCallInterface, path: string, authenticator: Authenticate, log: Logger): grpc.ServerInterceptingCall {
  let settled = false;
  let readWanted = false;

  const refuse = (code: ErrorCode): void => {
    const row = ERROR_TABLE[code];
    call.sendStatus({ code: row.grpc, details: row.message, metadata: new grpc.Metadata() });
  };
  const failed = (err: unknown, peer: string, token: string): void => {
    // Fail closed; a bad token never throws past this boundary.
    log.error('authenticator failed', { peer, method: path, err, token: tokenHash(token) });
    refuse('ERR_INTERNAL');
  };
  const open = (md: grpc.Metadata, pass: (md: grpc.Metadata) => void): void => {
    settled = true;
    pass(md);
    if (readWanted) {
      readWanted = false;
      call.startRead();
    }
  };
  const check = (md: grpc.Metadata, pass: (md: grpc.Metadata) => void): void => {
    const peer = next.getPeer();
    if (md.get('authorization').length === 0 && isLoopbackPeer(peer)) {
      open(md, pass);
      return;
    }
    const bearer = bearerFromMetadata(md);
    if (!bearer.ok) {
      log.info('control-plane call refused', { peer, method: path, code: bearer.code });
      refuse(bearer.code);
      return;
    }
    const settle = (a: AuthResult): void => {
      if (a.ok) {
        open(md, pass);
        return;
      }
      log.info('control-plane call refused', { peer, method: path, code: a.error.code, detail: a.error.detail, token: tokenHash(bearer.token) });
      refuse(a.error.code);
    };
    let r: AuthResult | Promise<AuthResult>;
    try {
      r = authenticator.authenticate(bearer.token);
    } catch (err) {
      failed(err, peer, bearer.token);
      return;
    }
    if (r instanceof Promise) r.then(settle, (err: unknown) => failed(err, peer, bearer.token));
    else settle(r);
  };

  const listener = new grpc.ServerListenerBuilder().withOnReceiveMetadata(check).build();
  const responder = new grpc.ResponderBuilder().withStart((pass) => pass(listener)).build();
  // startRead is not part of a responder: the one method overridden here.
  class Held extends grpc.ServerInterceptingCall {
    override startRead(): void {
      if (settled) super.startRead();
      else readWanted = true;
    }
  }
  const call = new Held(next, responder);
  return call;
}
