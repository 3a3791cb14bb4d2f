import * as z from '../../../lib/schema.ts';

/**
 * The control plane's `telemetry:` options: its OTLP/gRPC receiver, the decision store and
 * optional forwarding. Meant to sit in the control-plane config file as `telemetry:`
 * (`telemetryReceiverSchema.prefault({})`); `startControlPlane` takes the parsed value.
 */
export const telemetryReceiverSchema = z.strictObject({
  enabled: z.boolean().default(true).meta({
    description: 'Serve the OTLP/gRPC Export services (trace, logs, metrics) on the control plane\'s port and keep recent decisions.',
  }),
  allowLoopbackWithoutToken: z.boolean().default(true).meta({
    description:
      'Accept OTLP exports from loopback addresses without a token. Other callers need a valid token; every resource they export must name services bound to their identity (`ward.service` and `service.name`, `bindings`), and their decision records count only for those services.',
  }),
  maxDecisions: z.int().min(1).max(10_000_000).default(10_000).meta({ description: 'Recent decisions kept in memory for `ward decisions` (the earliest received evicted first).' }),
  maxMessageBytes: z.int().min(65_536).max(64 * 1024 * 1024).default(4 * 1024 * 1024).meta({
    description: 'Largest accepted gRPC message on the control plane\'s port (OTLP batches; the OTLP default is 4 MiB).',
  }),
  forward: z
    .strictObject({
      endpoint: z.string().min(1).meta({
        description: 'Another OTLP/gRPC receiver (a collector, Jaeger, Tempo\u2026): `host:port`, `http://host:port` or `https://host:port`. Every accepted Export is sent on as received (none that carried a decision record the control plane refused).',
        examples: ['otel-collector.observability:4317'],
      }),
      headers: z
        .record(
          z
            .string()
            .regex(/^[a-z0-9][a-z0-9._-]*$/)
            .refine((k) => !k.endsWith('-bin'), { message: 'a `-bin` key holds binary metadata, which a config cannot give' }),
          z.string().regex(/^[\x20-\x7e]*$/, 'gRPC metadata values are printable ASCII'),
        )
        .default({})
        .meta({ description: 'gRPC metadata sent with every forwarded Export (ASCII keys not ending in `-bin`, printable ASCII values).' }),
      caFile: z.string().min(1).optional().meta({ description: 'PEM CA bundle for an `https://` endpoint (absolute, or relative to the config file).' }),
      timeoutMs: z.int().min(1).max(600_000).default(10_000).meta({ description: 'Deadline of one forwarded Export.' }),
      maxQueueBytes: z.int().min(1024).max(1024 * 1024 * 1024).default(32 * 1024 * 1024).meta({
        description: 'Bytes of requests waiting to be forwarded; beyond it requests are dropped and counted.',
      }),
      concurrency: z.int().min(1).max(64).default(4).meta({ description: 'Forwarded Exports in flight at once.' }),
    })
    .optional()
    .meta({ description: 'Forward everything received to another OTLP endpoint.' }),
});

export type TelemetryReceiverConfig = z.output<typeof telemetryReceiverSchema>;

export const DEFAULT_TELEMETRY_RECEIVER: TelemetryReceiverConfig = Object.freeze(telemetryReceiverSchema.parse({}));
