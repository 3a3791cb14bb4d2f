/**
 * An on/off environment setting (`WARD_TRIM_FILE_PAGES`, `WARD_NATIVE_VERIFY`): unset, empty or
 * `on` is on, `off` is off, anything else is refused with the variable named (bin/ward.js exits
 * with status 2), never quietly read as one or the other.
 */
export function onOff(env: NodeJS.ProcessEnv, name: string): boolean {
  const v = env[name];
  if (v === undefined || v === '' || v === 'on') return true;
  if (v === 'off') return false;
  throw new Error(`${name}: '${v}' is neither on nor off`);
}

/** `onOff` where a refused value cannot stop the process any more: read as off (bin/ward.js has refused it before anything runs). */
export function isOn(env: NodeJS.ProcessEnv, name: string): boolean {
  try {
    return onOff(env, name);
  } catch {
    return false;
  }
}
