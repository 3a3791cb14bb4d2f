import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { streamDecisions } from '../cli/decisions.ts';
import type { DecisionEntryWire } from '../controlplane/server/decisions/service.ts';
import { parseControlPlaneConfig } from '../controlplane/server/config.ts';
import { runControlPlane } from '../controlplane/server/run.ts';
import type { Logger } from '../lib/log.ts';

/**
 * The demo's control plane: the real `ward control-plane` server, in process, over a policy
 * directory in the demo's temp dir. Sidecars get their policy from it (authenticated with their
 * own dev-IdP client credentials) and export their decisions to it over OTLP.
 */
export interface DemoControlPlane {
  readonly address: string;
  readonly policyDir: string;
  /** Atomically replaces a service's policy file (as an editor or a ConfigMap swap would). */
  publish(file: string, text: string): void;
  /** Recent decisions, through the DecisionLog gRPC service (what `ward decisions` shows). */
  decisions(limit: number): Promise<DecisionEntryWire[]>;
  close(): Promise<void>;
}

export async function startDemoControlPlane(o: { issuer: string; dir: string; log: Logger }): Promise<DemoControlPlane> {
  const policyDir = join(o.dir, 'policies');
  mkdirSync(policyDir, { recursive: true });
  const file = join(o.dir, 'control-plane.yaml');
  const text = `# the demo's control plane (ward control-plane). Reference: docs/control-plane.md
id: demo
listen: { host: 127.0.0.1, port: 0 }
policyDir: policies
watch: { debounceMs: 50 }
authn:
  issuers:
    - issuer: ${o.issuer}
      audiences: [urn:ward:control-plane]
bindings:
  - subject: orders-sidecar
    services: [orders]
`;
  writeFileSync(file, text);
  const cfg = parseControlPlaneConfig(text, file);
  // the demo rotates the IdP's key: a sidecar token signed with the new key must pass at once
  const cp = await runControlPlane(cfg, { log: o.log, jwks: { timeoutMs: 2000, cooldownMs: 0 } });
  const address = `127.0.0.1:${cp.port}`;
  return {
    address,
    policyDir,
    publish(name, body) {
      const tmp = join(policyDir, `.${name}.tmp`);
      writeFileSync(tmp, body);
      renameSync(tmp, join(policyDir, name));
    },
    async decisions(limit) {
      const out: DecisionEntryWire[] = [];
      await streamDecisions(
        { address, timeoutMs: 3000, query: { service: '', decision: '', reason: '', subject: '', sinceUnixMs: 0, untilUnixMs: 0, limit, follow: false } },
        (e) => out.push(e),
      );
      return out;
    },
    close: () => cp.close(),
  };
}
