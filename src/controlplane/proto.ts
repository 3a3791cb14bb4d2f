import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * The control-plane protos, loaded once, and the wire shapes proto-loader produces for them
 * (camelCase fields, int64 as number, unset message fields as null). Generated message objects
 * never travel further than the server's handlers and the client's watch: both turn them into
 * their own values at the boundary.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
export const CONTROL_PLANE_PROTO = 'ward/v1/control_plane.proto';
export const HEALTH_PROTO = 'grpc/health/v1/health.proto';
export const POLICY_DISCOVERY_SERVICE = 'ward.v1.PolicyDiscovery';

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

interface Loaded {
  readonly PolicyDiscovery: grpc.ServiceClientConstructor;
  readonly Health: grpc.ServiceClientConstructor;
}

let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded === undefined) {
    const def = protoLoader.loadSync([CONTROL_PLANE_PROTO, HEALTH_PROTO], LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      ward: { v1: { PolicyDiscovery: grpc.ServiceClientConstructor } };
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    };
    loaded = { PolicyDiscovery: pkg.ward.v1.PolicyDiscovery, Health: pkg.grpc.health.v1.Health };
  }
  return loaded;
}

export function policyDiscoveryClient(): grpc.ServiceClientConstructor {
  return load().PolicyDiscovery;
}

export function healthClient(): grpc.ServiceClientConstructor {
  return load().Health;
}

// ---- wire shapes (as proto-loader decodes them with LOADER_OPTIONS) ----

export interface ErrorDetailWire {
  code: number;
  message: string;
}

export interface PolicyRequestWire {
  service: string;
  instanceId: string;
  versionInfo: string;
  responseNonce: string;
  /** null when absent: its presence is what makes a request a NACK. */
  errorDetail: ErrorDetailWire | null;
}

export interface PolicyResponseWire {
  versionInfo: string;
  nonce: string;
  service: string;
  policy: { fileName: string; text: string } | null;
  controlPlaneId: string;
}

export interface StatusRequestWire {
  service: string;
}

export interface FileIssueWire {
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
}

export interface ServiceStatusWire {
  service: string;
  version: string;
  sourceFile: string;
  updatedAtUnixMs: number;
  lastError: FileIssueWire[];
}

export interface FileStatusWire {
  file: string;
  service: string;
  issues: FileIssueWire[];
  sinceUnixMs: number;
}

export interface NackStatusWire {
  version: string;
  message: string;
  atUnixMs: number;
}

export interface SidecarStatusWire {
  service: string;
  instanceId: string;
  subject: string;
  issuer: string;
  peer: string;
  ackedVersion: string;
  pendingVersion: string;
  lastNack: NackStatusWire | null;
  nackCount: number;
  connectedSinceUnixMs: number;
}

export interface StatusResponseWire {
  controlPlaneId: string;
  policyDir: string;
  startedAtUnixMs: number;
  services: ServiceStatusWire[];
  files: FileStatusWire[];
  sidecars: SidecarStatusWire[];
}

export type HealthStatusWire = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/** google.rpc.Code values the protocol uses in ErrorDetail. */
export const RpcCode = {
  INVALID_ARGUMENT: 3,
  FAILED_PRECONDITION: 9,
} as const;

/** Longest error_detail message the server records (bounded per-stream state). */
export const MAX_NACK_MESSAGE = 1024;
/** Longest accepted instance_id. */
export const MAX_INSTANCE_ID = 128;
