import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { UsageError } from './command.ts';

/**
 * How `ward status` and `ward decisions` reach the control plane: cleartext, TLS with the system
 * roots (`--tls`) or with a given CA (`--ca-file`), and optionally the name the certificate is
 * verified for (`--server-name`): through `kubectl port-forward` the address is 127.0.0.1, while
 * the certificate names the Service (`ward-control-plane.ward-system.svc`).
 */
export interface ControlPlaneChannel {
  readonly credentials: grpc.ChannelCredentials;
  readonly options: grpc.ChannelOptions;
}

export const CHANNEL_FLAGS = {
  tls: { type: 'boolean' },
  'ca-file': { type: 'string' },
  'server-name': { type: 'string' },
} as const;

/** The options' help lines, the descriptions starting at column `col` (as the command's other options). */
export function channelHelp(col: number): string {
  const line = (flag: string, text: string): string => `      ${flag}`.padEnd(col) + text;
  return [
    line('--tls', 'connect with TLS (system roots)'),
    line('--ca-file FILE', 'connect with TLS, trusting this PEM CA'),
    line('--server-name NAME', "verify the certificate for NAME instead of the address's host"),
    `${''.padEnd(col)}(through kubectl port-forward: ward-control-plane.ward-system.svc)`,
  ].join('\n');
}

export function controlPlaneChannel(values: { readonly tls?: boolean | undefined; readonly 'ca-file'?: string | undefined; readonly 'server-name'?: string | undefined }): ControlPlaneChannel {
  const caFile = values['ca-file'];
  const serverName = values['server-name'];
  const tls = values.tls === true || caFile !== undefined;
  if (serverName !== undefined) {
    if (!tls) throw new UsageError('--server-name needs --tls or --ca-file');
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(serverName)) throw new UsageError(`--server-name must be a DNS name, got '${serverName}'`);
  }
  let ca: Buffer | null = null;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile);
    } catch (err) {
      throw new UsageError(`--ca-file ${caFile}: cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  return {
    credentials: tls ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure(),
    options: serverName === undefined ? {} : { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName },
  };
}
