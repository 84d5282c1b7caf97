// Prometheus metrics (prom-client), one registry per server so that several servers in one
// process (tests) never share counters. Route labels are route templates, never raw URLs, to
// keep the label sets bounded.
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client';
import { httpMetrics } from './http-common.ts';

/** Seconds: fine below 10 ms, where micro-batching and a worker's round trip live. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1, 2.5];

export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'refit_' });
  const m = {
    registry,
    ...httpMetrics(registry),
    predictions: new Counter({ name: 'refit_predicted_samples_total', help: 'Samples predicted, by model and method', labelNames: ['model', 'method'] as const, registers: [registry] }),
    adaptationSteps: new Counter({ name: 'refit_adaptation_steps_total', help: 'Batches that updated a tenant\'s adaptation state, by model and method', labelNames: ['model', 'method'] as const, registers: [registry] }),
    skippedSteps: new Counter({ name: 'refit_adaptation_skipped_total', help: 'Adaptation steps refused because the loss or a gradient was not finite', labelNames: ['model', 'method'] as const, registers: [registry] }),
    rejected: new Counter({ name: 'refit_rejected_inputs_total', help: 'Predict requests rejected before reaching the model, by reason', labelNames: ['model', 'reason'] as const, registers: [registry] }),
    driftAlarms: new Counter({ name: 'refit_drift_alarms_total', help: 'Drift alarms raised by the continual controller\'s detectors', labelNames: ['model'] as const, registers: [registry] }),
    controllerEvents: new Counter({ name: 'refit_controller_events_total', help: 'Continual controller events by kind (escalate, deescalate, rollback, checkpoint, drift, budget, collapse, feedback)', labelNames: ['model', 'kind'] as const, registers: [registry] }),
    feedback: new Counter({ name: 'refit_feedback_labels_total', help: 'Labels received as feedback, by outcome (accepted, unknown, expired, invalid)', labelNames: ['model', 'outcome'] as const, registers: [registry] }),
    registryWrites: new Counter({ name: 'refit_registry_writes_total', help: 'Registry writes by operation (put, delete, rollback, good, tenant-state)', labelNames: ['op'] as const, registers: [registry] }),
    batchRequests: new Histogram({ name: 'refit_microbatch_requests', help: 'Predict requests joined into one onnxruntime run (plain inference)', labelNames: ['model'] as const, buckets: [1, 2, 4, 8, 16, 32, 64], registers: [registry] }),
    batchSamples: new Histogram({ name: 'refit_microbatch_samples', help: 'Samples per onnxruntime run of joined predict requests (plain inference)', labelNames: ['model'] as const, buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers: [registry] }),
    // Where a plain predict's time goes inside the server (docs/serve.md, load test): waiting for
    // companions or a free run slot, then the run itself (worker round trip included).
    batchWait: new Histogram({ name: 'refit_microbatch_wait_seconds', help: 'Time a predict request waited in the micro-batcher before its run was sent (plain inference)', labelNames: ['model'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    runSeconds: new Histogram({ name: 'refit_inference_run_seconds', help: 'Time of one onnxruntime run of joined predict requests, from send to answer (plain inference)', labelNames: ['model'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    tenants: new Gauge({ name: 'refit_tenants_active', help: 'Tenant adaptation sessions held in memory', labelNames: ['model'] as const, registers: [registry] }),
    evictions: new Counter({ name: 'refit_tenant_evictions_total', help: 'Tenant sessions released from memory (state saved to the registry where the method can save it)', labelNames: ['model'] as const, registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
