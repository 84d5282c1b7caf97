// The fleet's cloud service (issue 15): the HTTP routes devices talk to. A device is registered
// by an operator (admin token) and gets its own token once; with it, it uploads rounds of samples
// (safetensors bytes, src/fleet/upload-codec.ts), fetches the adapter it should run and reports
// the one it applied. Each accepted upload becomes one `consolidate` job on the queue; the
// workers (./worker.ts) do the slow work. The service holds no state of its own: the FleetStore,
// BlobStore, JobQueue and AdapterRegistry do, so any number of these servers can run side by side.
//
// Bad input never corrupts shared state: the token is checked before the body is read, the bytes
// are decoded and checked in full before anything is written, and the FleetStore's acceptUpload
// is the one atomic guard against replays and impersonation. A rejection is a 4xx with a message,
// a warning in the log with its reason, and a count in refit_fleet_uploads_rejected_total; at
// worst it leaves an orphan blob (bytes written whose record was then refused), never a record
// without bytes or a job without a record.
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import { STATUS_CODES } from 'node:http';
import { randomBytes } from 'node:crypto';
import { sha256Hex } from '../util/sha256-node.ts';
import { Registry, Counter, collectDefaultMetrics } from 'prom-client';
import { isSafeName } from '../registry/types.ts';
import { HttpError } from '../serve/inputs.ts';
import { nameSchema, errorSchema, serviceOptions, bearerToken, sameToken, httpMetrics, allowOrigins } from '../serve/http-common.ts';
import { FleetError, type CloudDeps, type Job } from './types.ts';
import { decodeUpload } from './upload-codec.ts';
import { FLEET_ADAPTER, DEVICE_NAME_MAX, deviceAdapterName, consolidateJobId, aggregateJobId, uploadBlobKey } from './names.ts';

/** What the cloud accepts for one model. */
export interface FleetModelConfig {
  /** Dims of one sample, without the batch axis (e.g. [1, 28, 28]); uploads of any other shape are refused. */
  sampleDims: number[];
  /** Samples per upload. @default 1024 */
  maxSamples?: number;
  /** Output classes: an upload's `predicted` values must lie in [0, classes). Unset: any index ≥ 0. */
  classes?: number;
}

export interface CloudServerConfig {
  /** Bearer token of the operator: registers devices and triggers aggregation. */
  adminToken: string;
  /** The models devices may upload for, by name (the `{model}` path segment). */
  models: Record<string, FleetModelConfig>;
  /** Largest upload body in bytes. @default 16 MiB */
  maxUploadBytes?: number;
  /** Fastify's logger option (createCloudServer only). @default false */
  logger?: FastifyServerOptions['logger'];
  /** Node process metrics in /metrics (createCloudServer only). @default true */
  defaultMetrics?: boolean;
  /**
   * Origins of the web pages whose devices may call the service from a browser (CORS), e.g.
   * ['https://app.example.com'], or '*' for any. A page on another origin cannot read the
   * service's answers without this. Devices authenticate with their bearer token, never cookies,
   * so no credentials are allowed. (createCloudServer only.) @default none
   */
  corsOrigins?: string[] | '*';
}

export type FleetMetrics = ReturnType<typeof createFleetMetrics>;

/** The fleet's counters, registered on `registry` (the server's, so /metrics shows them). */
export function createFleetMetrics(registry: Registry) {
  return {
    uploadsAccepted: new Counter({ name: 'refit_fleet_uploads_accepted_total', help: 'Uploads recorded (one per device round), by model', labelNames: ['model'] as const, registers: [registry] }),
    uploadsRejected: new Counter({ name: 'refit_fleet_uploads_rejected_total', help: 'Uploads refused, by model and reason (unauthorized, impersonation, invalid, too-large, replay, unknown-model, media-type, schema, unavailable)', labelNames: ['model', 'reason'] as const, registers: [registry] }),
    uploadBytes: new Counter({ name: 'refit_fleet_upload_bytes_total', help: 'Bytes of accepted uploads, by model', labelNames: ['model'] as const, registers: [registry] }),
    uploadSamples: new Counter({ name: 'refit_fleet_upload_samples_total', help: 'Samples in accepted uploads, by model', labelNames: ['model'] as const, registers: [registry] }),
    jobsPublished: new Counter({ name: 'refit_fleet_jobs_published_total', help: 'Jobs published to the queue, by kind and whether the queue found it a duplicate', labelNames: ['kind', 'duplicate'] as const, registers: [registry] }),
    adapterFetches: new Counter({ name: 'refit_fleet_adapter_fetches_total', help: 'Adapter fetches by devices, by outcome (sent, unchanged, none)', labelNames: ['model', 'outcome'] as const, registers: [registry] }),
    authFailures: new Counter({ name: 'refit_fleet_auth_failures_total', help: 'Requests refused for a missing or wrong token, by route template', labelNames: ['route'] as const, registers: [registry] }),
  };
}

const model = nameSchema();
const device = nameSchema(DEVICE_NAME_MAX);
const modelParams = { type: 'object', required: ['model'], properties: { model } } as const;
const deviceParams = { type: 'object', required: ['model', 'device'], properties: { model, device } } as const;
const NAME_OK = (v: unknown, max: number) => isSafeName(v) && v.length <= max;
const STATUS: Record<FleetError['code'], number> = { invalid: 400, unauthorized: 401, conflict: 409, 'not-found': 404, unavailable: 503 };

type RouteConfig = { auth?: 'admin' | 'device'; upload?: boolean };
type DeviceParams = { model: string; device: string };

/**
 * Add the fleet routes to `app` (in their own plugin scope: their body parser, auth and error
 * handler touch no other route). Counters go to `metrics` (see createFleetMetrics).
 */
export async function fleetRoutes(app: FastifyInstance, deps: CloudDeps, config: CloudServerConfig, metrics: FleetMetrics): Promise<void> {
  const models = new Map(Object.entries(config.models));
  for (const [k, m] of models) {
    if (!NAME_OK(k, 128)) throw new Error(`fleet model name ${JSON.stringify(k)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', without '..'`);
    if (!Array.isArray(m.sampleDims) || m.sampleDims.length === 0 || !m.sampleDims.every((d) => Number.isInteger(d) && d > 0)) {
      throw new Error(`fleet model '${k}': sampleDims must be positive integers (one sample's dims without the batch axis), got ${JSON.stringify(m.sampleDims)}`);
    }
    if (m.classes !== undefined && !(Number.isInteger(m.classes) && m.classes > 0)) throw new Error(`fleet model '${k}': classes must be a positive integer, got ${m.classes}`);
  }
  if (typeof config.adminToken !== 'string' || config.adminToken.length < 16) throw new Error('fleet: adminToken must be a string of at least 16 characters');
  const maxUploadBytes = config.maxUploadBytes ?? 16 * 2 ** 20;
  const { store, blobs, queue, registry } = deps;

  await app.register(async (scope) => {
    // Upload bodies are raw bytes; the limit is checked on Content-Length before anything is read.
    scope.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: maxUploadBytes }, (_req, body, done) => done(null, body));

    // Auth runs before the body is read, so an unauthenticated client cannot make the server
    // buffer an upload. The names are checked here too (the schema runs only after the body).
    scope.addHook('onRequest', async (req) => {
      const cfg = req.routeOptions.config as RouteConfig | undefined;
      if (!cfg?.auth) return;
      const p = req.params as Partial<DeviceParams>;
      if (!NAME_OK(p.model, 128)) throw new HttpError(400, `model ${JSON.stringify(p.model)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'`, 'schema');
      if (cfg.auth === 'device' && !NAME_OK(p.device, DEVICE_NAME_MAX)) throw new HttpError(400, `device ${JSON.stringify(p.device)} is not allowed: use 1-${DEVICE_NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'`, 'schema');
      if (!models.has(p.model!)) throw new HttpError(404, `the fleet has no model '${p.model}'; it has: ${[...models.keys()].join(', ')}`, 'unknown-model');
      const token = bearerToken(req.headers.authorization);
      const ok = cfg.auth === 'admin' ? sameToken(token, config.adminToken) : token !== undefined && (await store.checkToken(p.model!, p.device!, token));
      if (!ok) {
        metrics.authFailures.inc({ route: req.routeOptions.url ?? 'unmatched' });
        throw new HttpError(401, cfg.auth === 'admin'
          ? `${req.method} ${req.routeOptions.url} needs the header 'Authorization: Bearer <admin token>'`
          : `${req.method} ${req.routeOptions.url} needs the header 'Authorization: Bearer <token>' with device '${p.device}''s own token (given at registration)`, 'unauthorized');
      }
    });

    scope.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown; code?: string; reason?: string }, req, reply) => {
      let status = err.statusCode ?? 500;
      let reason = err instanceof HttpError ? err.reason : undefined;
      if (err instanceof FleetError) {
        status = STATUS[err.code];
        reason ??= err.code === 'conflict' ? 'replay' : err.code;
      } else if (err.validation) reason = 'schema';
      else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') reason = 'too-large';
      else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || status === 415) reason = 'media-type';
      const p = req.params as Partial<DeviceParams> | undefined;
      const where = { route: req.routeOptions.url, model: p?.model, device: p?.device };
      if (status >= 500) req.log.error({ ...where, reason: reason ?? 'internal', err }, `fleet: ${err.message}`);
      else req.log.warn({ ...where, reason: reason ?? 'invalid', status }, `fleet: refused: ${err.message}`);
      if ((req.routeOptions.config as RouteConfig | undefined)?.upload) {
        metrics.uploadsRejected.inc({ model: p?.model && models.has(p.model) ? p.model : 'unknown', reason: reason ?? (status >= 500 ? 'internal' : 'invalid') });
      }
      void reply.status(status).send({ statusCode: status, error: STATUS_CODES[status] ?? 'Error', message: err.message, ...(reason ? { reason } : {}) });
    });

    const publish = async (job: Job): Promise<boolean> => {
      try {
        const { duplicate } = await queue.publish(job);
        metrics.jobsPublished.inc({ kind: job.kind, duplicate: String(duplicate) });
        return duplicate;
      } catch (e) {
        throw new HttpError(503, `the job queue is unavailable (${(e as Error).message}); ${job.kind === 'consolidate' ? 'the upload is recorded: send the same round again to publish its job' : 'try again'}`, 'unavailable');
      }
    };

    scope.post('/v1/fleet/:model/devices', {
      config: { auth: 'admin' } satisfies RouteConfig,
      schema: {
        summary: 'Register a device; the answer holds its token, shown this once (only its sha256 is stored)',
        tags: ['fleet'], security: [{ bearer: [] }], params: modelParams,
        body: { type: 'object', required: ['device'], additionalProperties: false, properties: { device } },
        response: {
          201: { type: 'object', properties: { model: { type: 'string' }, device: { type: 'string' }, token: { type: 'string' }, registeredAt: { type: 'string' } } },
          '4xx': errorSchema,
        },
      },
    }, async (req, reply) => {
      const { model: m } = req.params as { model: string };
      const { device: d } = req.body as { device: string };
      if (await store.getDevice(m, d)) throw new HttpError(409, `device '${d}' of model '${m}' is already registered`, 'conflict');
      const token = randomBytes(32).toString('base64url');
      const rec = await store.registerDevice(m, d, token);
      req.log.info({ model: m, device: d }, 'fleet: device registered');
      return reply.status(201).send({ model: m, device: d, token, registeredAt: rec.registeredAt });
    });

    scope.post('/v1/fleet/:model/devices/:device/uploads', {
      bodyLimit: maxUploadBytes,
      config: { auth: 'device', upload: true } satisfies RouteConfig,
      schema: {
        summary: 'Upload one round of samples (safetensors bytes from src/fleet/upload-codec.ts); accepted uploads queue a consolidation job',
        description: `Body: application/octet-stream, the upload's safetensors bytes (tensors x float32 [n, ...sample dims], optional entropy float32 [n], predicted int32 [n]; metadata model, device, round). The round must be newer than the device's last; sending the device's last round again with the same bytes is answered as a duplicate (and re-publishes its job) so that a device can retry safely. Limit: ${maxUploadBytes} bytes.`,
        tags: ['fleet'], security: [{ bearer: [] }], params: deviceParams,
        response: {
          202: {
            type: 'object',
            properties: { model: { type: 'string' }, device: { type: 'string' }, round: { type: 'integer' }, samples: { type: 'integer' }, bytes: { type: 'integer' }, sha256: { type: 'string' }, job: { type: 'string' }, duplicate: { type: 'boolean' } },
          },
          '4xx': errorSchema,
        },
      },
    }, async (req, reply) => {
      const { model: m, device: d } = req.params as DeviceParams;
      const token = bearerToken(req.headers.authorization)!;
      const cfg = models.get(m)!;
      if (!Buffer.isBuffer(req.body)) throw new HttpError(415, `an upload's body is application/octet-stream (safetensors bytes), got ${req.headers['content-type'] ?? 'none'}`, 'media-type');
      const bytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
      const p = decodeUpload(bytes, { sampleDims: cfg.sampleDims, maxSamples: cfg.maxSamples ?? 1024, maxBytes: maxUploadBytes, ...(cfg.classes ? { classes: cfg.classes } : {}) });
      if (p.model !== m) throw new HttpError(400, `the upload is for model '${p.model}', but was sent to model '${m}'`, 'invalid');
      if (p.device !== d) throw new HttpError(403, `the upload claims device '${p.device}', but the token is device '${d}''s`, 'impersonation');
      const hash = sha256Hex(bytes);
      const job: Job = { id: consolidateJobId(m, d, p.round), kind: 'consolidate', model: m, device: d, round: p.round };
      const answer = { model: m, device: d, round: p.round, samples: p.dims[0]!, bytes: bytes.byteLength, sha256: hash, job: job.id };

      // A round already seen: the device's last one with the very same bytes is a retry (after a
      // lost answer or a 503 from the queue) and only re-publishes its job; anything else is a replay.
      const dev = await store.getDevice(m, d);
      if (!dev) throw new HttpError(401, `device '${d}' of model '${m}' is not registered`, 'unauthorized');
      if (p.round <= dev.lastRound) {
        const prev = p.round === dev.lastRound ? (await store.uploads(m, d, p.round - 1)).find((u) => u.round === p.round) : undefined;
        if (!prev || prev.sha256 !== hash) throw new HttpError(409, `round ${p.round} is not newer than device '${d}''s last accepted round ${dev.lastRound} (a replay); send round ${dev.lastRound + 1} or later`, 'replay');
        await publish(job);
        req.log.info({ model: m, device: d, round: p.round }, 'fleet: upload retried; job re-published');
        return reply.status(202).send({ ...answer, duplicate: true });
      }

      const blobKey = uploadBlobKey(m, d, p.round, hash);
      try {
        await blobs.put(blobKey, bytes);
      } catch (e) {
        throw new HttpError(503, `the blob store is unavailable (${(e as Error).message}); send the same round again`, 'unavailable');
      }
      try {
        await store.acceptUpload({ model: m, device: d, round: p.round, blobKey, sha256: hash, samples: p.dims[0]!, bytes: bytes.byteLength }, token);
      } catch (e) {
        if (e instanceof FleetError) throw e; // replay (conflict) or token (unauthorized): mapped by the error handler
        throw new HttpError(503, `the fleet store is unavailable (${(e as Error).message}); send the same round again`, 'unavailable');
      }
      metrics.uploadsAccepted.inc({ model: m });
      metrics.uploadBytes.inc({ model: m }, bytes.byteLength);
      metrics.uploadSamples.inc({ model: m }, p.dims[0]!);
      const duplicate = await publish(job);
      req.log.info({ model: m, device: d, round: p.round, samples: p.dims[0], bytes: bytes.byteLength }, 'fleet: upload accepted');
      return reply.status(202).send({ ...answer, duplicate });
    });

    scope.get('/v1/fleet/:model/devices/:device/adapter', {
      config: { auth: 'device' } satisfies RouteConfig,
      schema: {
        summary: 'The adapter the device should run: its own consolidated adapter, else the fleet aggregate; 204 when it already runs it (or there is none)',
        tags: ['fleet'], security: [{ bearer: [] }], params: deviceParams,
        querystring: { type: 'object', additionalProperties: false, properties: { current: { type: 'string', pattern: `^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}@[1-9][0-9]{0,15}$`, description: 'name@version the device runs now' } } },
        response: {
          200: {
            type: 'object',
            properties: {
              name: { type: 'string' }, version: { type: 'integer' }, sha256: { type: 'string' }, configSha256: { type: 'string' },
              config: { type: 'string', description: 'adapter_config.json' }, weights: { type: 'string', description: 'adapter_model.safetensors, base64' },
            },
          },
          '4xx': errorSchema,
        },
      },
    }, async (req, reply) => {
      const { model: m, device: d } = req.params as DeviceParams;
      const { current } = req.query as { current?: string };
      let name = deviceAdapterName(d);
      let v = await registry.current(m, name);
      if (v === null) {
        name = FLEET_ADAPTER;
        v = await registry.current(m, name);
      }
      if (v === null) {
        metrics.adapterFetches.inc({ model: m, outcome: 'none' });
        return reply.status(204).send();
      }
      if (current === `${name}@${v}`) {
        metrics.adapterFetches.inc({ model: m, outcome: 'unchanged' });
        return reply.status(204).send();
      }
      const s = await registry.get(m, name, v); // verified against its sha256 by the registry
      if (!s) throw new HttpError(503, `adapter '${name}' version ${v} vanished while being read; try again`, 'unavailable');
      metrics.adapterFetches.inc({ model: m, outcome: 'sent' });
      const w = s.files.weights;
      return { name, version: s.version, sha256: s.sha256, configSha256: s.configSha256, config: s.files.config, weights: Buffer.from(w.buffer, w.byteOffset, w.byteLength).toString('base64') };
    });

    scope.post('/v1/fleet/:model/devices/:device/applied', {
      config: { auth: 'device' } satisfies RouteConfig,
      schema: {
        summary: 'Record the adapter version the device now runs (name and version; neither: the base model)',
        tags: ['fleet'], security: [{ bearer: [] }], params: deviceParams,
        body: { type: 'object', additionalProperties: false, properties: { name: { ...model, description: `'${FLEET_ADAPTER}' or the device's own 'device.<device>'` }, version: { type: 'integer', minimum: 1 } } },
        response: { 200: { type: 'object', properties: { model: { type: 'string' }, device: { type: 'string' }, name: { type: ['string', 'null'] }, version: { type: ['integer', 'null'] } } }, '4xx': errorSchema },
      },
    }, async (req) => {
      const { model: m, device: d } = req.params as DeviceParams;
      const body = (req.body ?? {}) as { name?: string; version?: number };
      if ((body.name === undefined) !== (body.version === undefined)) throw new HttpError(400, 'give both name and version (or neither, for the base model)', 'schema');
      if (body.name !== undefined) {
        // A device runs its own adapter or the fleet's, never another device's.
        if (body.name !== FLEET_ADAPTER && body.name !== deviceAdapterName(d)) throw new HttpError(403, `device '${d}' can run '${FLEET_ADAPTER}' or '${deviceAdapterName(d)}', not '${body.name}'`, 'impersonation');
        const versions = await registry.versions(m, body.name);
        if (!versions.some((x) => x.version === body.version)) throw new HttpError(404, `adapter '${body.name}' of model '${m}' has no version ${body.version}`, 'not-found');
      }
      await store.setAppliedVersion(m, d, body.version ?? null);
      req.log.info({ model: m, device: d, name: body.name ?? null, version: body.version ?? null }, 'fleet: device applied');
      return { model: m, device: d, name: body.name ?? null, version: body.version ?? null };
    });

    scope.post('/v1/fleet/:model/aggregate', {
      config: { auth: 'admin' } satisfies RouteConfig,
      schema: {
        summary: 'Queue an aggregation round: the devices\' current adapters merged into the fleet adapter (idempotent per round)',
        tags: ['fleet'], security: [{ bearer: [] }], params: modelParams,
        body: { type: 'object', required: ['round'], additionalProperties: false, properties: { round: { type: 'integer', minimum: 1 } } },
        response: { 202: { type: 'object', properties: { job: { type: 'string' }, duplicate: { type: 'boolean' } } }, '4xx': errorSchema },
      },
    }, async (req, reply) => {
      const { model: m } = req.params as { model: string };
      const { round } = req.body as { round: number };
      const job: Job = { id: aggregateJobId(m, round), kind: 'aggregate', model: m, round };
      const duplicate = await publish(job);
      return reply.status(202).send({ job: job.id, duplicate });
    });
  });
}

/**
 * A standalone cloud service: the fleet routes plus /healthz, /metrics (prom-client) and
 * /docs/json (OpenAPI). `await app.close()` stops it (the deps are the caller's to close).
 */
export async function createCloudServer(deps: CloudDeps, config: CloudServerConfig): Promise<FastifyInstance> {
  const app = Fastify(serviceOptions({ bodyLimit: 1024 * 1024, logger: config.logger }));
  const promRegistry = new Registry();
  if (config.defaultMetrics !== false) collectDefaultMetrics({ register: promRegistry, prefix: 'refit_' });
  const { requests, latency } = httpMetrics(promRegistry);
  const metrics = createFleetMetrics(promRegistry);
  if (config.corsOrigins !== undefined) await allowOrigins(app, config.corsOrigins, { methods: ['GET', 'POST'], headers: ['authorization', 'content-type'], who: 'fleet: corsOrigins' });
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'refit fleet cloud', version: '1', description: 'Devices register, upload rounds of samples and fetch the adapters the cloud consolidates for them. See docs/fleet.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  app.addHook('onResponse', async (req: FastifyRequest, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, method: req.method, status: String(reply.statusCode) });
    latency.observe({ route, method: req.method }, reply.elapsedTime / 1000);
  });
  app.get('/healthz', { schema: { security: [], summary: 'Liveness', tags: ['service'] } }, async () => ({ status: 'ok', models: Object.keys(config.models), uptimeSeconds: Math.round(process.uptime()) }));
  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', tags: ['service'] } }, async (_req, reply) => {
    void reply.header('content-type', promRegistry.contentType);
    return promRegistry.metrics();
  });
  app.get('/docs/json', { schema: { hide: true } }, async () => app.swagger());
  await fleetRoutes(app, deps, config, metrics);
  return app;
}
