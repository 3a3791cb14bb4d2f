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
  ...over,
});
