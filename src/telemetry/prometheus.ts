import { type Attributes, DataPointType, type Histogram, type MetricData, type ResourceMetrics } from './metric-data.ts';

/**
 * The Prometheus text exposition (format 0.0.4) of collected metrics, for the admin `/metrics`.
 * It writes exactly what `@opentelemetry/exporter-prometheus`'s `PrometheusSerializer` writes
 * with its defaults (a `target_info` family from the resource, `otel_scope_name` /
 * `otel_scope_version` labels, `_total` on monotonic sums, cumulative `_bucket` series); a test
 * compares the two on the same data. That package is not imported: for two attribute names it
 * loads `@opentelemetry/semantic-conventions`, ~7 MB of a sidecar's memory
 * (docs/performance.md "Memory").
 */

interface Family {
  help: string;
  unit: string;
  readonly type: string;
  readonly metrics: { readonly metric: MetricData; readonly scope: ResourceMetrics['scopeMetrics'][number]['scope'] }[];
}

export function serializePrometheus(rm: ResourceMetrics): string {
  const families = collectFamilies(rm);
  let str = '';
  let resource = '';
  for (const [name, family] of families) {
    if (family === null) continue;
    let writeMetadata = true;
    if (name === 'target_info') {
      resource = serializeResource(rm.resource.attributes, family, writeMetadata);
      writeMetadata = false;
    }
    for (const { metric, scope } of family.metrics) {
      const s = serializeMetric(metric, scope, name, family, writeMetadata);
      if (s !== '') {
        str += `${s}\n`;
        writeMetadata = false;
      }
    }
  }
  if (str === '') str = '# no registered metrics';
  return resource + str;
}

/** Families by exposed name; a name two metrics give with different types is dropped (null). */
function collectFamilies(rm: ResourceMetrics): Map<string, Family | null> {
  const families = new Map<string, Family | null>();
  families.set('target_info', { help: 'Target metadata', unit: '', type: 'gauge', metrics: [] });
  for (const sm of rm.scopeMetrics) {
    for (const metric of sm.metrics) {
      const name = prometheusName(metric);
      if (name === undefined) continue;
      const type = prometheusType(metric);
      const family = families.get(name);
      if (family === undefined) {
        families.set(name, { help: metric.descriptor.description, unit: metric.descriptor.unit, type, metrics: [{ metric, scope: sm.scope }] });
      } else if (family !== null) {
        if (family.type !== type) families.set(name, null);
        else family.metrics.push({ metric, scope: sm.scope });
      }
    }
  }
  // The first help and unit given win.
  for (const family of families.values()) {
    if (family === null) continue;
    for (const { metric } of family.metrics) {
      if (metric.descriptor.description !== '' && family.help === '') family.help = metric.descriptor.description;
      if (metric.descriptor.unit !== '' && family.unit === '') family.unit = metric.descriptor.unit;
    }
  }
  return families;
}

function serializeMetric(metric: MetricData, scope: Family['metrics'][number]['scope'], name: string, family: Family, writeMetadata: boolean): string {
  const extra: Record<string, string> = { 'otel.scope.name': scope.name };
  if (scope.schemaUrl !== undefined && scope.schemaUrl !== '') extra['otel.scope.schema_url'] = scope.schemaUrl;
  if (scope.version !== undefined && scope.version !== '') extra['otel.scope.version'] = scope.version;
  let results = '';
  if (metric.dataPointType === DataPointType.SUM || metric.dataPointType === DataPointType.GAUGE) {
    for (const p of metric.dataPoints) results += sample(name, p.attributes, p.value, extra);
  } else if (metric.dataPointType === DataPointType.HISTOGRAM) {
    for (const p of metric.dataPoints) results += histogramSamples(name, p.attributes, p.value, extra);
  }
  const head = writeMetadata ? `${metadata(name, family.help || 'description missing', family.unit, family.type)}\n` : '';
  return `${head}${results}`.trim();
}

function histogramSamples(name: string, attributes: Attributes, h: Histogram, extra: Record<string, string>): string {
  let out = sample(`${name}_count`, attributes, h.count, extra);
  if (h.sum !== undefined) out += sample(`${name}_sum`, attributes, h.sum, extra);
  let cumulative = 0;
  let infinityGiven = false;
  for (let i = 0; i < h.buckets.counts.length; i++) {
    cumulative += h.buckets.counts[i] as number;
    const upper = h.buckets.boundaries[i];
    if (upper === undefined && infinityGiven) break;
    if (upper === Infinity) infinityGiven = true;
    out += sample(`${name}_bucket`, attributes, cumulative, { ...extra, le: upper === undefined || upper === Infinity ? '+Inf' : String(upper) });
  }
  return out;
}

function serializeResource(attributes: Attributes, family: Family, writeMetadata: boolean): string {
  const line = sample('target_info', attributes, 1, undefined).trim();
  return `${writeMetadata ? `${metadata('target_info', family.help, family.unit, family.type)}\n` : ''}${line}\n`;
}

function metadata(name: string, help: string, unit: string, type: string): string {
  return `# HELP ${name} ${escapeString(help)}${unit !== '' ? `\n# UNIT ${name} ${escapeString(unit)}` : ''}\n# TYPE ${name} ${type}`;
}

function sample(name: string, attributes: Attributes, value: number, extra: Record<string, string> | undefined): string {
  const entries = Object.entries(attributes);
  if (extra !== undefined) entries.push(...Object.entries(extra));
  let labels = '';
  const names = entries.map(([k]) => labelName(k));
  if (new Set(names).size === names.length) {
    for (let i = 0; i < entries.length; i++) labels += `${labels === '' ? '' : ','}${names[i] as string}="${escapeLabelValue((entries[i] as [string, unknown])[1])}"`;
  } else {
    // Two keys that sanitize to one label (`a-b` and `a_b`, a resource attribute and a metric's):
    // a label name twice makes Prometheus refuse the whole scrape (found in review). One label,
    // the values joined with `;` in the order of their original keys, as OTel's Prometheus
    // compatibility specification asks.
    const merged = new Map<string, [string, unknown][]>();
    entries.forEach((e, i) => {
      const n = names[i] as string;
      const list = merged.get(n);
      if (list === undefined) merged.set(n, [e]);
      else list.push(e);
    });
    for (const [n, list] of merged) {
      const v = list.length === 1 ? escapeLabelValue((list[0] as [string, unknown])[1]) : list.sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([, x]) => escapeLabelValue(x)).join(';');
      labels += `${labels === '' ? '' : ','}${n}="${v}"`;
    }
  }
  return `${labels === '' ? name : `${name}{${labels}}`} ${valueString(value)}\n`;
}

/** A label name Prometheus takes: sanitized, and not starting with a digit (`key_` before it, as OTel's spec says). */
function labelName(key: string): string {
  const n = sanitize(key);
  return n.charCodeAt(0) >= 0x30 && n.charCodeAt(0) <= 0x39 ? `key_${n}` : n;
}

function prometheusName(metric: MetricData): string | undefined {
  let name = sanitize(escapeString(metric.descriptor.name));
  if (name === '' || name === '_') return undefined;
  if (name[0] !== undefined && name[0] >= '0' && name[0] <= '9') name = `_${name}`;
  if (!name.endsWith('_total') && metric.dataPointType === DataPointType.SUM && metric.isMonotonic) name += '_total';
  return name;
}

function prometheusType(metric: MetricData): string {
  switch (metric.dataPointType) {
    case DataPointType.SUM:
      return metric.isMonotonic ? 'counter' : 'gauge';
    case DataPointType.GAUGE:
      return 'gauge';
    case DataPointType.HISTOGRAM:
      return 'histogram';
    default:
      return 'untyped';
  }
}

/** OTel allows `.` and `-` in names; Prometheus does not (and runs of `_` collapse). */
function sanitize(name: string): string {
  return name.replace(/[^a-z0-9_]/gi, '_').replace(/_{2,}/g, '_');
}

function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(v: unknown): string {
  const s = v === undefined ? '' : typeof v === 'string' ? v : String(JSON.stringify(v));
  return escapeString(s).replace(/"/g, '\\"');
}

function valueString(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return `${v}`;
}
