import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { filePagesReport, type FilePagesReport } from '../lib/file-pages.ts';

/** The admin `/memory` document: this process's memory, as Envoy's admin `/memory` reports its own. */
export interface MemoryReport {
  readonly rssBytes: number;
  /** The highest RSS since the process started (`getrusage` maxrss). */
  readonly peakRssBytes: number;
  readonly heap: {
    readonly totalBytes: number;
    readonly usedBytes: number;
    readonly limitBytes: number;
    /** What V8 itself holds through malloc (compiler zones and the like). */
    readonly mallocedBytes: number;
    readonly peakMallocedBytes: number;
  };
  readonly spaces: readonly { readonly name: string; readonly sizeBytes: number; readonly usedBytes: number; readonly physicalBytes: number }[];
  /** Memory of ArrayBuffers and Buffers (socket reads, frames, export batches), outside the heap. */
  readonly arrayBuffersBytes: number;
  /** Memory of C++ objects bound to JavaScript ones, ArrayBuffers included. */
  readonly externalBytes: number;
  /**
   * Node loaded its TypeScript type stripper (a WebAssembly compiler, ~20 MB of RSS for the
   * life of the process) because a module ward loaded was not in the compile cache
   * (docs/performance.md, "Node and V8 settings").
   */
  readonly typeStripperLoaded: boolean;
  /** The file pages trimmed from the resident set (src/lib/file-pages.ts; docs/performance.md, "Memory"). */
  readonly filePages: FilePagesReport;
}

/** Node's type stripper, as `process.moduleLoadList` names it once loaded. */
const TYPE_STRIPPER = 'NativeModule internal/deps/amaro/dist/index';

export function memoryReport(): MemoryReport {
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  return {
    rssBytes: m.rss,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    heap: {
      totalBytes: h.total_heap_size,
      usedBytes: h.used_heap_size,
      limitBytes: h.heap_size_limit,
      mallocedBytes: h.malloced_memory,
      peakMallocedBytes: h.peak_malloced_memory,
    },
    spaces: getHeapSpaceStatistics().map((s) => ({ name: s.space_name, sizeBytes: s.space_size, usedBytes: s.space_used_size, physicalBytes: s.physical_space_size })),
    arrayBuffersBytes: m.arrayBuffers,
    externalBytes: m.external,
    typeStripperLoaded: (process as NodeJS.Process & { moduleLoadList?: readonly string[] }).moduleLoadList?.includes(TYPE_STRIPPER) === true,
    filePages: filePagesReport(),
  };
}
