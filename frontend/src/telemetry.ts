// Browser tracing: document load and every fetch become spans, exported over OTLP/HTTP to
// the collector named in /config.json ({"otlpTracesUrl": "https://.../v1/traces"}), read
// at start so one build serves every environment. Without it nothing is loaded or sent.
// Same-origin API calls carry `traceparent`, so the browser span is the root of the
// server's trace.

export interface RuntimeConfig {
  otlpTracesUrl?: string
  serviceName?: string
}

export async function loadConfig(): Promise<RuntimeConfig> {
  try {
    const response = await fetch('/config.json', { cache: 'no-cache' })
    return response.ok ? ((await response.json()) as RuntimeConfig) : {}
  } catch {
    return {}
  }
}

export async function startTracing(config: RuntimeConfig): Promise<boolean> {
  if (!config.otlpTracesUrl) return false
  // Loaded only when configured: the SDK is a separate chunk.
  const [{ WebTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { registerInstrumentations }, { FetchInstrumentation }, { DocumentLoadInstrumentation }, { resourceFromAttributes }] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-web'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/instrumentation'),
      import('@opentelemetry/instrumentation-fetch'),
      import('@opentelemetry/instrumentation-document-load'),
      import('@opentelemetry/resources'),
    ])
  const provider = new WebTracerProvider({
    resource: resourceFromAttributes({
      'service.name': config.serviceName ?? 'missive-frontend',
      'service.namespace': 'missive',
    }),
    // Small, frequent batches: a browser tab can vanish at any moment.
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlpTracesUrl }), {
        scheduledDelayMillis: 1000,
      }),
    ],
  })
  provider.register()
  // Leaving the page: send what is buffered (the exporter uses a keep-alive request).
  addEventListener('pagehide', () => void provider.forceFlush())
  registerInstrumentations({
    instrumentations: [
      new FetchInstrumentation({
        // Only our own API gets the header; the collector is another origin.
        propagateTraceHeaderCorsUrls: [new RegExp(`^${location.origin}/api/`)],
        ignoreUrls: [config.otlpTracesUrl, /\/config\.json$/],
      }),
      new DocumentLoadInstrumentation(),
    ],
  })
  return true
}
