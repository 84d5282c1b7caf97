// The HTTP service (Node-only): see docs/serve.md.
export { buildServer, TENANT_HEADER, type ServeOptions } from './server.ts';
export { TenantPool, SERVE_METHODS, CONTINUAL } from './tenants.ts';
export { KeyedQueue } from './queue.ts';
export { HttpError, toInputTensor } from './inputs.ts';
export { createMetrics, type Metrics } from './metrics.ts';
export { encodeAdapterState, decodeAdapterState } from './state-codec.ts';
export { MicroBatcher, type MicroBatchOptions } from './microbatch.ts';
