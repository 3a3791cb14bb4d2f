import type { StoredDecision } from '../../../src/controlplane/server/decisions/store.ts';
import type { DecisionRecord } from '../../../src/inbound/types.ts';

/** A decision record for telemetry tests: a denied gRPC call by default, fields overridable. */
export const decisionRecord = (over: Partial<DecisionRecord> = {}): DecisionRecord => ({
  decisionId: 'd-1',
  time: 1_700_000_000_123,
  service: 'orders',
  protocol: 'grpc',
  method: 'POST',
  route: '/ward.demo.v1.Orders/DeleteOrder',
  decision: 'deny',
  code: 'ERR_POLICY_DENIED',
  rule: 'no-deletes',
  policyVersion: 'v1abc',
  issuer: 'http://idp',
  subject: 'reporting',
  dryRunCode: null,
  dryRunRule: null,
  ...over,
});

/** A decision as the control plane stores it: a denied gRPC call by default, fields overridable. */
export const storedDecision = (over: Partial<StoredDecision> = {}): StoredDecision => ({
  timeMs: 1000,
  service: 'orders',
  direction: 'inbound',
  decision: 'deny',
  reason: 'ERR_POLICY_DENIED',
  rule: 'no-deletes',
  policyVersion: '0123456789abcdef',
  issuer: 'http://idp',
  subject: 'reporting',
  method: 'POST',
  route: '/ward.demo.v1.Orders/DeleteOrder',
  decisionId: 'id',
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  instanceId: 'pod',
  destination: '',
  exchangeOutcome: '',
  dryRunRule: '',
  ...over,
});
