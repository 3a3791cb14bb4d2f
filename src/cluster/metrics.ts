/**
 * Merges the Prometheus text expositions (format 0.0.4) of several workers into one, each
 * sample labelled `worker="<id>"`. The format wants every family's samples together under one
 * `# HELP`/`# TYPE`, so families are regrouped in first-seen order; a family's samples are the
 * lines that follow its `# TYPE` in each input (histogram `_bucket`/`_sum`/`_count` included).
 */
export function mergeExpositions(inputs: readonly { readonly worker: string; readonly text: string }[]): string {
  const families = new Map<string, { help: string | null; type: string | null; samples: string[] }>();
  const family = (name: string): { help: string | null; type: string | null; samples: string[] } => {
    let f = families.get(name);
    if (f === undefined) {
      f = { help: null, type: null, samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const { worker, text } of inputs) {
    const label = `worker="${worker.replace(/["\\\n]/g, '')}"`;
    let current = '';
    for (const line of text.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('# HELP ')) {
        const name = line.slice(7).split(' ', 1)[0] ?? '';
        current = name;
        family(name).help ??= line;
      } else if (line.startsWith('# TYPE ')) {
        const name = line.slice(7).split(' ', 1)[0] ?? '';
        current = name;
        family(name).type ??= line;
      } else if (line.startsWith('#')) {
        continue;
      } else {
        const brace = line.indexOf('{');
        const space = line.indexOf(' ');
        const labelled =
          brace !== -1 && (space === -1 || brace < space)
            ? `${line.slice(0, brace + 1)}${label}${line[brace + 1] === '}' ? '' : ','}${line.slice(brace + 1)}`
            : `${line.slice(0, space)}{${label}}${line.slice(space)}`;
        family(current === '' ? (line.slice(0, brace !== -1 && brace < space ? brace : space)) : current).samples.push(labelled);
      }
    }
  }
  const out: string[] = [];
  for (const f of families.values()) {
    if (f.help !== null) out.push(f.help);
    if (f.type !== null) out.push(f.type);
    out.push(...f.samples);
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}
