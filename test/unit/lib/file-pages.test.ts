import { describe, expect, it } from 'vitest';
import { createPageReleaser, mappingKeys, releasableRanges, trimEnabled } from '../../../src/lib/file-pages.ts';

/** One /proc/<pid>/smaps entry, with the fields the parser reads (the rest as the kernel writes them). */
function entry(head: string, f: { rss?: number; anonymous?: number; swap?: number; locked?: number; privateDirty?: number; sharedDirty?: number } = {}): string {
  return [
    head,
    'Size:                 2048 kB',
    'KernelPageSize:          4 kB',
    `Rss:                  ${f.rss ?? 1024} kB`,
    'Pss:                  1024 kB',
    'Shared_Clean:            0 kB',
    `Shared_Dirty:         ${f.sharedDirty ?? 0} kB`,
    'Private_Clean:        1024 kB',
    `Private_Dirty:        ${f.privateDirty ?? 0} kB`,
    `Anonymous:            ${f.anonymous ?? 0} kB`,
    `Swap:                 ${f.swap ?? 0} kB`,
    `Locked:               ${f.locked ?? 0} kB`,
    'THPeligible:    0',
    'VmFlags: rd ex mr mw me ',
  ].join('\n');
}

const NODE = '/opt/node/bin/node';

describe('releasableRanges (which of /proc/self/smaps may be dropped)', () => {
  it("takes the binary's read-only and executable private file mappings with no page of their own", () => {
    const smaps = [
      entry(`55d0a0000000-55d0a2000000 r--p 00000000 fe:00 1234                       ${NODE}`, { rss: 8000 }),
      entry(`55d0a2000000-55d0a4800000 r-xp 02000000 fe:00 1234                       ${NODE}`, { rss: 21000 }),
      entry('7f1c40000000-7f1c40028000 r--p 00000000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6', { rss: 160 }),
    ].join('\n');
    expect(releasableRanges(`${smaps}\n`)).toEqual([
      { start: 0x55d0a0000000, end: 0x55d0a2000000, rssKb: 8000, path: NODE, key: `55d0a0000000-55d0a2000000 r--p 00000000 fe:00 1234 ${NODE}` },
      { start: 0x55d0a2000000, end: 0x55d0a4800000, rssKb: 21000, path: NODE, key: `55d0a2000000-55d0a4800000 r-xp 02000000 fe:00 1234 ${NODE}` },
      { start: 0x7f1c40000000, end: 0x7f1c40028000, rssKb: 160, path: '/usr/lib/x86_64-linux-gnu/libc.so.6', key: '7f1c40000000-7f1c40028000 r--p 00000000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6' },
    ]);
  });

  it('leaves everything else: writable, shared, anonymous, special, deleted, or with pages of its own', () => {
    const kept = [
      // written: the binary's data and a relocated (RELRO) page turned read-only again
      entry(`55d0a4800000-55d0a4900000 rw-p 04800000 fe:00 1234                       ${NODE}`),
      entry(`55d0a4900000-55d0a4a00000 r--p 04900000 fe:00 1234                       ${NODE}`, { anonymous: 400, privateDirty: 400 }),
      // a copy-on-write page swapped out, a locked range, nothing resident
      entry(`55d0a4a00000-55d0a4b00000 r--p 04a00000 fe:00 1234                       ${NODE}`, { swap: 8 }),
      entry(`55d0a4b00000-55d0a4c00000 r-xp 04b00000 fe:00 1234                       ${NODE}`, { locked: 1024 }),
      entry(`55d0a4c00000-55d0a4d00000 r-xp 04c00000 fe:00 1234                       ${NODE}`, { rss: 0 }),
      // shared mappings, whatever their file
      entry('7f1c50000000-7f1c50100000 r--s 00000000 fe:00 77                         /var/cache/some.db'),
      entry('7f1c50100000-7f1c50200000 r--s 00000000 00:01 5                          /memfd:v8 (deleted)'),
      // anonymous and special mappings
      entry('7f1c60000000-7f1c60100000 r--p 00000000 00:00 0 '),
      entry('7f1c60100000-7f1c60200000 r--p 00000000 00:00 0                          [heap]'),
      entry('7ffd1a9fe000-7ffd1aa00000 r-xp 00000000 00:00 0                          [vdso]'),
      entry('7f1c60200000-7f1c60300000 r--p 00000000 00:05 4                          /dev/zero'),
      entry('7f1c60300000-7f1c60400000 r--p 00000000 00:14 9                          /memfd:jit'),
      // a file replaced since it was mapped: its pages could not be read back as they were
      entry('7f1c60400000-7f1c60500000 r-xp 00000000 fe:00 55                         /opt/app/old.node (deleted)'),
    ].join('\n');
    expect(releasableRanges(kept)).toEqual([]);
  });

  it('keeps a mapping whose entry does not say how many pages of its own it has (no Anonymous field)', () => {
    const noAnonymous = entry(`55d0a4900000-55d0a4a00000 r--p 04900000 fe:00 1234   ${NODE}`)
      .split('\n')
      .filter((l) => !l.startsWith('Anonymous:'))
      .join('\n');
    expect(releasableRanges(noAnonymous)).toEqual([]);
  });

  it('reads a path with spaces, and ignores lines it does not know', () => {
    const smaps = `${entry('7f1c70000000-7f1c70001000 r--p 00000000 fe:00 3                          /opt/my app/lib x.so')}\nSomethingNew:   12 kB\nnot a field\n`;
    expect(releasableRanges(smaps)).toEqual([{ start: 0x7f1c70000000, end: 0x7f1c70001000, rssKb: 1024, path: '/opt/my app/lib x.so', key: '7f1c70000000-7f1c70001000 r--p 00000000 fe:00 3 /opt/my app/lib x.so' }]);
  });
});

describe('WARD_TRIM_FILE_PAGES', () => {
  it('is on unless off; anything else is refused by name', () => {
    expect(trimEnabled({})).toBe(true);
    expect(trimEnabled({ WARD_TRIM_FILE_PAGES: '' })).toBe(true);
    expect(trimEnabled({ WARD_TRIM_FILE_PAGES: 'on' })).toBe(true);
    expect(trimEnabled({ WARD_TRIM_FILE_PAGES: 'off' })).toBe(false);
    expect(() => trimEnabled({ WARD_TRIM_FILE_PAGES: 'false' })).toThrow("WARD_TRIM_FILE_PAGES: 'false' is neither on nor off");
  });
});

describe('createPageReleaser', () => {
  it('without its addon releases nothing and says why', () => {
    const r = createPageReleaser('/nonexistent/release-pages.node');
    expect(r.report()).toMatchObject({ state: 'pending', releases: 0 });
    expect(r.release({})).toBe(0);
    expect(r.report()).toMatchObject({ state: 'unavailable', releases: 0, releasedBytes: 0 });
    expect(r.report().detail).toContain('/nonexistent/release-pages.node not loaded');
    expect(r.report().detail).toContain('bin/build-native.js');
  });

  it('turned off, does not even load the addon', () => {
    const r = createPageReleaser('/nonexistent/release-pages.node');
    expect(r.release({ WARD_TRIM_FILE_PAGES: 'off' })).toBe(0);
    expect(r.report()).toEqual({ state: 'off', detail: null, releases: 0, releasedBytes: 0, trims: 0, refused: 0 });
  });
});

describe('mappingKeys (/proc/self/maps)', () => {
  it('names each mapping as releasableRanges does, whatever the padding before its path', () => {
    const maps = [
      `55d0a0000000-55d0a2000000 r--p 00000000 fe:00 1234                       ${NODE}`,
      '7f1c60000000-7f1c60100000 rw-p 00000000 00:00 0 ',
      '7ffd1a9fe000-7ffd1aa00000 r-xp 00000000 00:00 0                          [vdso]',
      '',
    ].join('\n');
    const [range] = releasableRanges(entry(`55d0a0000000-55d0a2000000 r--p 00000000 fe:00 1234   ${NODE}`));
    const keys = mappingKeys(maps);
    expect(keys.size).toBe(3);
    expect(keys.has(range!.key)).toBe(true);
  });
});
