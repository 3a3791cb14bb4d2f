import { type Schema, toJSONSchema } from '../../src/lib/schema.ts';

/**
 * For tests that keep a hand-written option table in docs/ in step with a config schema:
 * every leaf option (dotted path, `[]` for array items) with its JSON Schema, and the way the
 * tables spell a default.
 */
export type JsonSchema = { properties?: Record<string, JsonSchema>; items?: JsonSchema; default?: unknown; description?: string };

export function schemaOptions(schema: Schema): { path: string; schema: JsonSchema }[] {
  const out: { path: string; schema: JsonSchema }[] = [];
  const walk = (s: JsonSchema, prefix: string): void => {
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      const path = `${prefix}${k}`;
      if (v.properties !== undefined) walk(v, `${path}.`);
      else if (v.items?.properties !== undefined) walk(v.items, `${path}[].`);
      else out.push({ path, schema: v });
    }
  };
  walk(toJSONSchema(schema), '');
  return out;
}

export function formatDefault(v: unknown): string {
  if (Array.isArray(v)) return `\`[${v.join(', ')}]\``;
  if (typeof v === 'object' && v !== null) return `\`${JSON.stringify(v)}\``;
  return `\`${String(v)}\``;
}
