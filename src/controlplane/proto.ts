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

// The wire shapes and the protocol's constants live in wire.ts (no grpc-js there: the sidecar's
// policy watch speaks the protocol over ward's own HTTP/2); re-exported for the server and CLI.
export * from './wire.ts';
