import { policyVersion } from '../../policy/compile.ts';
import { validatePolicyText } from '../../policy/load.ts';
import type { ValidatedPolicy } from './store.ts';

/**
 * The control plane's policy validator: the schema and semantic checks of `ward policy check`
 * (policy/load.ts `validatePolicyText`) and the same content hash the sidecar's compiler
 * computes (`policyVersion`), so versions agree on both sides.
 *
 * It stops short of compiling, whose only extra checks read HMAC secrets (`hmacSecretFile`,
 * `hmacSecretEnv`). Those are the sidecar's local secrets: a control plane that needed them
 * would hold every service's secrets, and would refuse a policy it cannot read them for. The
 * sidecar compiles fully and NACKs a version whose secret it lacks.
 */
export function validatePolicyForControlPlane(text: string, file: string): ValidatedPolicy {
  const parsed = validatePolicyText(text, file);
  return { service: parsed.service, version: policyVersion(parsed) };
}
