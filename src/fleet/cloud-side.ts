// The fleet's cloud side (Node-only: PostgreSQL, NATS JetStream, the file system): the service
// devices talk to, the job worker, and the stores and queues behind them: the package's subpath
// `refit/fleet` (not in the main entry: pg, nats and the S3 client cost about
// a second of import time); the device side is ./device-side.ts (`fleet`, in both entries).
export { createCloudServer, fleetRoutes, type CloudServerConfig, type FleetModelConfig } from './cloud-server.ts';
export { createJobHandler, runWorker, type WorkerDeps, type WorkerLog } from './worker.ts';
export { createConsolidator, makeTeacher, TEACHERS, DEFAULT_TEACHER, type Consolidator, type ConsolidatorOptions, type TeacherChoice } from './consolidator.ts';
export { consolidate, type ConsolidateInput, type ConsolidateOptions, type ConsolidateResult } from './consolidate.ts';
export { aggregate, type AggregateInput, type AggregateOptions } from './aggregate.ts';
export { NatsJobQueue, type NatsQueueOptions } from './queue-nats.ts';
export { MemoryJobQueue, type MemoryQueueOptions } from './queue-memory.ts';
export { PostgresFleetStore } from './store-postgres.ts';
export { MemoryFleetStore } from './store-memory.ts';
export { FsBlobStore } from '../registry/blob-store-fs.ts';
export { S3BlobStore, type S3BlobStoreOptions } from '../registry/blob-store-s3.ts';
export { PostgresRegistry, type PostgresRegistryOptions } from '../registry/postgres.ts';
export { openRegistry, openBlobStore, type OpenRegistryOptions } from '../registry/open.ts';
export type { BlobStore, FleetStore, JobQueue, Job, JobContext, DeviceRecord, UploadRecord, JobResult, CloudDeps } from './types.ts';
