/**
 * A strict parser of the Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), for tests: anything the format
 * does not allow throws with the line number. Comments other than HELP/TYPE are ignored, as the
 * format says (OpenMetrics' `# UNIT` is one of them).
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string | undefined;
  readonly samples: Sample[];
}

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s: string, line: number): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value '${s}'`);
  return Number(s);
}

function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(sample);
  if (direct !== undefined) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f !== undefined && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, Family>();
  const seenSamples = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((raw, i) => {
    const n = i + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(raw);
      if (m === null) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC.test(name)) throw new Error(`line ${n}: bad metric name '${name}'`);
      let f = families.get(name);
      if (kind === 'TYPE') {
        if (rest === undefined || !TYPES.has(rest)) throw new Error(`line ${n}: bad type '${rest ?? ''}'`);
        if (f !== undefined && (f.samples.length > 0 || f.type !== 'untyped')) throw new Error(`line ${n}: TYPE for ${name} after its samples or twice`);
        if (f === undefined) families.set(name, (f = { name, type: 'untyped', help: undefined, samples: [] }));
        f.type = rest as Family['type'];
      } else {
        if (f === undefined) families.set(name, (f = { name, type: 'untyped', help: undefined, samples: [] }));
        if (f.help !== undefined) throw new Error(`line ${n}: second HELP for ${name}`);
        f.help = rest ?? '';
      }
      return;
    }
    // name{labels} value [timestamp]
    const nm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(raw);
    if (nm === null) throw new Error(`line ${n}: expected a metric name: ${raw}`);
    const name = nm[1] as string;
    let pos = name.length;
    const labels: Record<string, string> = {};
    if (raw[pos] === '{') {
      pos++;
      for (;;) {
        if (raw[pos] === '}') {
          pos++;
          break;
        }
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(raw.slice(pos));
        if (lm === null) throw new Error(`line ${n}: bad label at column ${pos + 1}: ${raw}`);
        const lname = lm[1] as string;
        if (!LABEL.test(lname) || lname.startsWith('__')) throw new Error(`line ${n}: bad label name '${lname}'`);
        if (lname in labels) throw new Error(`line ${n}: duplicate label '${lname}'`);
        pos += lm[0].length;
        let value = '';
        for (;;) {
          const c = raw[pos];
          if (c === undefined) throw new Error(`line ${n}: unterminated label value`);
          pos++;
          if (c === '"') break;
          if (c === '\\') {
            const e = raw[pos++];
            if (e === 'n') value += '\n';
            else if (e === '\\' || e === '"') value += e;
            else throw new Error(`line ${n}: bad escape '\\${e ?? ''}'`);
          } else value += c;
        }
        labels[lname] = value;
        if (raw[pos] === ',') pos++;
        else if (raw[pos] !== '}') throw new Error(`line ${n}: expected ',' or '}' at column ${pos + 1}`);
      }
    }
    if (raw[pos] !== ' ') throw new Error(`line ${n}: expected a space before the value`);
    const parts = raw.slice(pos + 1).trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2) throw new Error(`line ${n}: expected 'value [timestamp]'`);
    const value = parseValue(parts[0] as string, n);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`line ${n}: bad timestamp`);
    let f = familyOf(name, families);
    if (f === undefined) families.set(name, (f = { name, type: 'untyped', help: undefined, samples: [] }));
    if (f.type === 'histogram') {
      if (name === `${f.name}_bucket`) {
        if (labels['le'] === undefined) throw new Error(`line ${n}: histogram bucket without 'le'`);
        parseValue(labels['le'], n);
      } else if (name !== `${f.name}_sum` && name !== `${f.name}_count`) throw new Error(`line ${n}: '${name}' is not a sample name of histogram ${f.name}`);
    }
    if (f.type === 'counter' && (value < 0 || Number.isNaN(value))) throw new Error(`line ${n}: counter ${name} is negative`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seenSamples.has(key)) throw new Error(`line ${n}: duplicate sample ${key}`);
    seenSamples.add(key);
    f.samples.push({ name, labels, value });
  });
  return families;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined if none. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
