// oidc-provider ships no types for its internal modules; this is the one we use (see provider.ts).
declare module 'oidc-provider/lib/adapters/memory_adapter.js' {
  import type { AdapterFactory } from 'oidc-provider';
  /** A factory over one fresh in-memory store: every Provider given it shares that store. */
  export function createMemoryAdapter(clockTolerance?: number): AdapterFactory;
}
