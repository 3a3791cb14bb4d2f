import { createAuthenticator } from '../../authn/authenticator.ts';
import type { Logger } from '../../lib/log.ts';
import { type ControlPlaneConfig, trustedIssuers } from './config.ts';
import { type RunningControlPlane, startControlPlane } from './control-plane.ts';
import { validatePolicyForControlPlane } from './validate.ts';

/** JWKS tuning for sidecar tokens: the config has none of its own, so the sidecar config's defaults. */
interface JwksTuning {
  readonly timeoutMs: number;
  readonly refreshIntervalMs: number;
  readonly cooldownMs: number;
  readonly graceMs: number;
}

export const CONTROL_PLANE_JWKS: JwksTuning = Object.freeze({ timeoutMs: 5000, refreshIntervalMs: 300_000, cooldownMs: 30_000, graceMs: 3_600_000 });

/**
 * A control plane as `ward control-plane` runs it: ward's own authenticator for sidecar tokens
 * (trusting the config's issuers), the policy validator of `ward policy check`, and the
 * telemetry receiver of the config. `close()` stops both.
 */
export async function runControlPlane(
  cfg: Readonly<ControlPlaneConfig>,
  o: { readonly log: Logger; readonly jwks?: Partial<JwksTuning> },
): Promise<RunningControlPlane & { keysReady(timeoutMs: number): Promise<boolean> }> {
  const authenticator = createAuthenticator({
    clockSkewSeconds: cfg.authn.clockSkewSeconds,
    maxTokenBytes: cfg.authn.maxTokenBytes,
    cacheEntries: 10_000,
    introspectionCacheMaxSeconds: 0,
    jwks: { ...CONTROL_PLANE_JWKS, ...o.jwks },
    credentials: [],
    log: o.log.child({ stage: 'authn' }),
  });
  authenticator.setIssuers(trustedIssuers(cfg));
  let cp: RunningControlPlane;
  try {
    cp = await startControlPlane(cfg, { log: o.log, parse: validatePolicyForControlPlane, authenticator, telemetry: cfg.telemetry });
  } catch (err) {
    authenticator.close();
    throw err;
  }
  return {
    ...cp,
    streams: () => cp.streams(),
    keysReady: (ms) => authenticator.whenReady(ms),
    async close() {
      await cp.close();
      authenticator.close();
    },
  };
}
