// `refit serve`: one Fastify app per process holding named base models, the adapter registry and
// the tenants' adaptation sessions. buildServer returns the Fastify instance (tests use
// app.inject, no port); src/cli/serve.ts listens on a port and handles signals.
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import { STATUS_CODES } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';

import { defaultLogits } from '../tta/types.ts';
import { LANGUAGE_MODEL_METHODS } from '../tta/index.ts';
import { withAdapterFiles, WEIGHTS_FILE, CONFIG_FILE } from '../peft/files.ts';
import { PeftError } from '../peft/errors.ts';
import { modelFingerprint } from '../io/model-state-file.ts';
import { type AdapterRegistry, type AdapterMeta, RegistryError, isSafeName, checkName } from '../registry/types.ts';
import { HttpError, toInputTensor, softmaxRows, argmaxRows, rows } from './inputs.ts';
import { toTokenTensor } from './token-inputs.ts';
import { RefusedInput } from '../continual/input-rows.ts';
import { TOKEN_COMPANIONS, TOKEN_DTYPES, vocabularySize } from '../onnx/token-companions.ts';
import { isImageInputs, imagesToTensor, type ImageOptions } from './images.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { TenantPool, SERVE_METHODS, CONTINUAL, makeAdapter, optionsFor } from './tenants.ts';
import { nameSchema, errorSchema, serviceOptions, allowOrigins } from './http-common.ts';
import { MicroBatcher, modelRunner, type MicroBatchOptions } from './microbatch.ts';
import { InferencePool } from './inference-pool.ts';
import { isTextInputs, textsToTensor, type EncodeTexts } from './texts.ts';

export interface ServeOptions {
  /** Base models by name (the name is the `{model}` path segment). */
  models: Record<string, RefitModel> | Map<string, RefitModel>;
  registry: AdapterRegistry;
  /** Adaptation per tenant: a TTA method (src/tta), 'continual', or 'none'/undefined for plain inference. */
  method?: string;
  /**
   * Options for the method (createAdapter's options, or the ContinualController's): one object for
   * every model, or per model by name (`refit serve --source` gives each its own source statistics).
   */
  methodOptions?: Record<string, unknown> | ((model: string) => Record<string, unknown>);
  /**
   * In-distribution batches per model: a new continual tenant's entropy reference comes from them
   * (`ContinualController.calibrate`) instead of its stream's first batches, and, when the options
   * give the controller a deep learner, the server warms that up once per model before it
   * listens (`ContinualController.prepareDeepLearner`), not inside a tenant's request. Unused by TTA methods.
   */
  calibration?: (model: string) => Tensor[] | undefined;
  /** Tenant sessions held in memory (older ones are saved to the registry and released). @default 64 */
  maxTenants?: number;
  /** Save each tenant's state to the registry every this many batches; 0: on release and shutdown only. @default 0 */
  persistEvery?: number;
  /** Samples per predict request. @default 256 */
  maxBatch?: number;
  /** Request body limit in bytes for predict and feedback. @default 16 MiB */
  bodyLimit?: number;
  /**
   * How image inputs (`inputs: { images: [base64 PNG/JPEG] }`) are prepared: resized to the
   * model's H×W (`resize`, ../data/image-resize.ts; unset: only images of that size are taken)
   * and normalised per channel (`pixels`). Tensor inputs are fed as they come.
   */
  images?: ImageOptions;
  /**
   * Per token model, how `inputs: { texts: [...] }` become ids (the model's tokenizer, padded with
   * the id its attention mask leaves out; refit serve builds it with ../cli/text-tokens.ts). A
   * token model without one takes ids only.
   */
  texts?: Map<string, EncodeTexts> | Record<string, EncodeTexts>;
  /** Request body limit for an adapter upload. @default 64 MiB */
  adapterBodyLimit?: number;
  /** Bearer token required by the write routes of the registry (PUT/DELETE adapters, rollback, good marks, tenant reset). Unset: open. */
  token?: string;
  /**
   * Reads closed too: every route but GET /healthz (predict, feedback, listings, adapter
   * downloads, /metrics, /docs/json) needs the token. Needs `token`. @default false (reads open)
   */
  protectReads?: boolean;
  /** Joining concurrent plain predictions (no adaptation method) into one run: { maxWaitMs: 2, maxSamples: 32, maxInFlight: 1 } by default; maxWaitMs 0 turns it off. */
  microBatch?: MicroBatchOptions;
  /**
   * Worker threads for plain predictions, each with its own onnxruntime session of
   * `inferenceThreads` threads, so that runs do not block the event loop and a request arriving
   * during one run starts on another core (docs/serve.md, load test). 0 runs them on the event
   * loop's thread. Unused (none started) with an adaptation method. @default 0
   */
  inferenceWorkers?: number;
  /** onnxruntime threads per inference worker. @default 1 */
  inferenceThreads?: number;
  /** Fastify's logger option. @default false */
  logger?: FastifyServerOptions['logger'];
  /**
   * Origins of web pages that may call the service from a browser (CORS), e.g.
   * ['https://app.example.com'], or '*'. Without it a page on another origin cannot read the
   * answers. Preflights are answered before the token check (they carry none). @default none
   */
  corsOrigins?: string[] | '*';
  /** Node process metrics (CPU, memory, event loop) in /metrics. @default true */
  defaultMetrics?: boolean;
}

export const TENANT_HEADER = 'x-refit-tenant';

// A path parameter that could read as a path step is refused by the schema (400) before any
// handler or the registry sees it (http-common.ts).
const name = nameSchema();
const modelParams = { type: 'object', required: ['model'], properties: { model: name } } as const;
const adapterParams = { type: 'object', required: ['model', 'name'], properties: { model: name, name } } as const;
// The shape and values of `inputs` are checked in code (./inputs.ts), not by the schema: the
// messages can then name the expected versus actual shape and the first non-finite value.
const inputsSchema = {
  anyOf: [{ type: 'array' }, { type: 'object' }],
  description: 'nested arrays in the model input\'s shape (e.g. [N][1][28][28]; one sample without the batch axis is accepted), { dims: [N, 1, 28, 28], data: [flat row-major numbers] }, or { dims, base64: the row-major values as little-endian float32 bytes in base64 } (the cheapest to parse: docs/serve.md), or { images: [base64 PNG or JPEG files] } (decoded, resized and normalised as the server was started: refit serve --resize, --mean, --std), or for a token model { texts: [strings, or [a, b] text pairs] } (tokenized by the model\'s tokenizer, padded to the longest)',
} as const;
// The 200 answer of predict, declared so that Fastify serializes it with fast-json-stringify
// (compiled once) instead of JSON.stringify; `adaptation` differs by method and stays free-form.
const rowsSchema = { type: 'array', items: { type: 'array', items: { type: 'number' } } } as const;
const predictResponse = {
  type: 'object',
  properties: {
    model: { type: 'string' }, tenant: { type: 'string' }, method: { type: 'string' },
    adapter: { type: ['object', 'null'], properties: { name: { type: 'string' }, version: { type: 'integer' } } },
    ids: { type: 'array', items: { type: 'string' }, description: 'one id per sample, for feedback' },
    predictions: { type: 'array', items: { type: 'integer' } },
    probabilities: rowsSchema, logits: rowsSchema,
    adaptation: { type: 'object', additionalProperties: true },
  },
} as const;
const adapterRef = {
  adapter: { ...name, description: 'a registry adapter to apply to the base model (its current version unless adapterVersion)' },
  adapterVersion: { type: 'integer', minimum: 1 },
} as const;
const metaSchema = {
  type: 'object', additionalProperties: false,
  properties: {
    method: { type: 'string' }, baseModelHash: { type: 'string' }, config: { type: 'object', additionalProperties: true },
    metrics: { type: 'object', additionalProperties: { type: 'number' } }, note: { type: 'string' },
  },
} as const;

type Ref = { name: string; version: number };

/** Build the app (routes, OpenAPI, metrics). Call `await app.close()` to save tenant state and stop. */
export async function buildServer(opts: ServeOptions): Promise<FastifyInstance> {
  const models = opts.models instanceof Map ? opts.models : new Map(Object.entries(opts.models));
  if (models.size === 0) throw new Error('buildServer: give at least one model');
  for (const k of models.keys()) checkName('model', k);
  if (opts.protectReads && !opts.token) throw new Error('buildServer: protectReads closes every route but /healthz behind the bearer token; give a token (refit serve: --token or $REFIT_TOKEN)');
  const px = opts.images?.pixels;
  if (px && px.mean.length > 1) {
    for (const [k, m] of models) {
      const C = m.inputs[0]?.shape?.[1];
      if (C !== px.mean.length) throw new Error(`model '${k}': the image normalisation gives ${px.mean.length} channels, but its input '${m.inputs[0]?.name}' has shape ${JSON.stringify(m.inputs[0]?.shape)}; give one value or one per channel`);
    }
  }
  const texts = opts.texts instanceof Map ? opts.texts : new Map(Object.entries(opts.texts ?? {}));
  // Token models (int64/int32 ids in): their vocabulary, to refuse an id out of it with a 400.
  const tokenInputs = new Map<string, { name: string; dtype: 'int64' | 'int32'; vocab: number | null }>();
  for (const [k, m] of models) {
    if (m.inputs.length !== 1) throw new Error(`model '${k}': the service feeds one input, and it takes ${m.inputs.length} (${m.inputs.map((i) => i.name).join(', ')}); for a Hugging Face token model, withTokenInputs(model, { padToken }) (refit serve: --pad-token) makes ${TOKEN_COMPANIONS.join(', ')} inside the graph`);
    const input = m.inputs[0]!;
    const logits = m.outputs.find((o) => o.name === defaultLogits(m.outputs));
    const tokens = TOKEN_DTYPES.has(input.dtype);
    // Class scores per sample only: a segmenter's per-pixel or a recogniser's per-frame scores read
    // as [batch, classes] would be answered as nonsense predictions.
    if (logits?.shape && logits.shape.length !== 2) {
      throw new Error(`model '${k}': the service answers class scores [batch, classes], and output '${logits.name}' is [${logits.shape.join(', ')}] (${tokens ? "a language model's logits are not served" : 'per-position outputs (a segmenter, a speech recogniser, a detector, a depth map) are not served'}); use refit eval, refit adapt or the library`);
    }
    if (!tokens) {
      if (texts.has(k)) throw new Error(`model '${k}': a text encoder is for a model of token ids, and its input '${input.name}' is ${input.dtype}`);
      continue;
    }
    tokenInputs.set(k, { name: input.name, dtype: input.dtype as 'int64' | 'int32', vocab: vocabularySize(m, input.name) });
  }
  const method = opts.method && opts.method !== 'none' ? opts.method : undefined;
  if (method && LANGUAGE_MODEL_METHODS.includes(method)) throw new Error(`${method} adapts language models, which the service does not serve; run it with refit adapt or the library`);
  if (method && !SERVE_METHODS.includes(method)) throw new Error(`unknown adaptation method '${method}'; known: none, ${SERVE_METHODS.join(', ')}`);
  // Fail at start, not on the first request, if the method or its options do not fit a model.
  if (method) {
    for (const [k, m] of models) {
      try {
        const probe = makeAdapter(m, method, optionsFor(opts.methodOptions, k));
        await probe.tta?.release();
        await probe.controller?.release();
      } catch (e) {
        throw new Error(`model '${k}': method '${method}' cannot run on it: ${(e as Error).message}`);
      }
    }
  }
  const maxBatch = opts.maxBatch ?? 256;
  let plainSeq = 0; // ids of plain predictions (no tenant state: nothing to give feedback to)
  const registry = opts.registry;
  const metrics: Metrics = createMetrics({ defaultMetrics: opts.defaultMetrics });
  const app = Fastify(serviceOptions({ bodyLimit: opts.bodyLimit ?? 16 * 1024 * 1024, logger: opts.logger }));
  const pool = new TenantPool({
    method: method ?? 'none', methodOptions: opts.methodOptions, calibration: opts.calibration, registry, metrics, maxTenants: opts.maxTenants, persistEvery: opts.persistEvery,
    log: { warn: (m) => app.log.warn(m), info: (m) => app.log.info(m) },
  });
  // Each model's calibration and deep-learner warm-up, before the first request rather than inside one.
  if (method === CONTINUAL) {
    for (const [k, m] of models) {
      try {
        await pool.start(k, m, true);
      } catch (e) {
        throw new Error(`model '${k}': preparing method 'continual' failed: ${(e as Error).message}`);
      }
    }
  }

  if (opts.corsOrigins !== undefined) await allowOrigins(app, opts.corsOrigins, { methods: ['GET', 'POST', 'PUT', 'DELETE'], headers: ['authorization', 'content-type', TENANT_HEADER], who: 'buildServer: corsOrigins' });
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'refit serve', version: '1', description: 'Predictions with per-tenant test-time or continual adaptation over shared base models, and a versioned adapter registry (HF PEFT layout). See docs/serve.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      ...(opts.protectReads ? { security: [{ bearer: [] }] } : {}), // every route; /healthz opts out
    },
  });

  // ---------------------------------------------------------------------------------------------
  // Cross-cutting: metrics, auth, errors
  // ---------------------------------------------------------------------------------------------

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.requests.inc({ route, method: req.method, status: String(reply.statusCode) });
    metrics.latency.observe({ route, method: req.method }, reply.elapsedTime / 1000);
  });

  const token = opts.token ? Buffer.from(`Bearer ${opts.token}`) : undefined;
  app.addHook('onRequest', async (req) => {
    if (!token) return;
    const config = req.routeOptions.config as { write?: boolean; open?: boolean } | undefined;
    // Closed reads cover unknown URLs too (a 401, not a 404 that would map the routes), but never
    // the liveness probe, which load balancers call without credentials.
    const needed = config?.write || (opts.protectReads && !config?.open);
    if (!needed) return;
    const got = Buffer.from(req.headers.authorization ?? '');
    if (got.length !== token.length || !timingSafeEqual(got, token)) throw new HttpError(401, `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]} needs the header 'Authorization: Bearer <token>' with the server's token`);
  });

  const modelLabel = (req: FastifyRequest) => {
    const m = (req.params as { model?: string } | undefined)?.model;
    return m && models.has(m) ? m : 'unknown';
  };

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown; code?: string }, req, reply) => {
    let status = err.statusCode ?? 500;
    if (err instanceof RegistryError) status = { 'not-found': 404, invalid: 400, corrupt: 500, conflict: 409, unavailable: 503 }[err.code];
    else if (err instanceof PeftError || err instanceof RefusedInput) status = 400;
    if (status >= 500) req.log.error(err);
    const route = req.routeOptions.url ?? '';
    if (route.endsWith('/predict') && (status === 400 || status === 413)) {
      const reason = err instanceof HttpError ? err.reason ?? 'invalid' : err.validation ? 'schema' : err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError ? 'invalid-json' : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'too-large' : 'invalid';
      metrics.rejected.inc({ model: modelLabel(req), reason });
    }
    let message = err.message;
    if (route.endsWith('/predict') && err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') message += ' (JSON has no NaN or Infinity; non-finite inputs are refused anyway)';
    void reply.status(status).send({ statusCode: status, error: STATUS_CODES[status] ?? 'Error', message });
  });

  const workers = opts.inferenceWorkers ?? 0;
  if (!Number.isInteger(workers) || workers < 0) throw new Error(`buildServer: inferenceWorkers must be an integer ≥ 0, got ${workers}`);
  // Only plain predictions run on the workers: with an adaptation method every predict is a
  // tenant's step on this thread, so no worker is started.
  const inference = workers > 0 && !method
    ? new InferencePool({ workers, session: { ...models.values().next().value!.sessionOptions, threads: opts.inferenceThreads ?? 1 } })
    : undefined;

  app.addHook('onClose', async () => {
    await pool.close();
    await inference?.close();
  });

  // ---------------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------------

  const getModel = (m: string): RefitModel => {
    const model = models.get(m);
    if (!model) throw new HttpError(404, `no model '${m}'; this server has: ${[...models.keys()].join(', ')}`);
    return model;
  };

  // Base + registry adapter, per version: immutable once built, so any number of requests may
  // read it while a new version is being put.
  const adapted = new Map<string, Promise<RefitModel>>();
  const withRegistryAdapter = async (m: string, adapter: string, version?: number): Promise<{ model: RefitModel; ref: Ref }> => {
    const base = getModel(m);
    const v = version ?? (await registry.current(m, adapter));
    if (v === null) throw new HttpError(404, `model '${m}' has no adapter '${adapter}' in the registry`);
    const key = `${m}\u0000${adapter}@${v}`;
    let p = adapted.get(key);
    if (!p) {
      p = (async () => {
        const stored = await registry.get(m, adapter, v);
        if (!stored) throw new HttpError(404, `adapter '${adapter}' of model '${m}' has no version ${v}`);
        const peft = withAdapterFiles(base, adapter, stored.files);
        try {
          return peft.merge(adapter); // folded into the weights: no extra latency
        } catch {
          return peft; // methods that cannot fold run as a graph rewrite
        }
      })();
      adapted.set(key, p);
      p.catch(() => adapted.delete(key));
      // Bounded: the oldest built versions are dropped (requests holding them finish on them).
      while (adapted.size > 32) adapted.delete(adapted.keys().next().value!);
    } else {
      adapted.delete(key);
      adapted.set(key, p); // most recently used last
    }
    return { model: await p, ref: { name: adapter, version: v } };
  };
  const forgetAdapter = (m: string, adapter: string) => {
    for (const k of adapted.keys()) if (k.startsWith(`${m}\u0000${adapter}@`)) adapted.delete(k);
    for (const k of batchers.keys()) if (k.startsWith(`${m}\u0000${adapter}@`)) batchers.delete(k);
    inference?.forget((k) => k.startsWith(`${m}\u0000${adapter}@`));
  };

  // One batcher per model (and adapter version) and per-sample shape: only like inputs are joined.
  const batchers = new Map<string, MicroBatcher>();
  const batcherFor = (m: string, ref: Ref | undefined, model: RefitModel, dims: readonly number[]): MicroBatcher => {
    const modelKey = `${m}\u0000${ref ? `${ref.name}@${ref.version}` : ''}`;
    const key = `${modelKey}|${dims.slice(1).join('x')}`;
    let b = batchers.get(key);
    if (!b) {
      const logits = defaultLogits(model.outputs);
      const input = model.inputs[0]!.name;
      const runner = inference ? (x: Tensor) => inference.run(modelKey, () => model.toBytes(), input, x, logits) : modelRunner(model, logits);
      const batching = inference ? { maxInFlight: inference.size, ...opts.microBatch } : opts.microBatch;
      b = new MicroBatcher(runner, batching, {
        batch: (requests, samples, waitedMs) => {
          metrics.batchRequests.observe({ model: m }, requests);
          metrics.batchSamples.observe({ model: m }, samples);
          for (const w of waitedMs) metrics.batchWait.observe({ model: m }, w / 1000);
        },
        run: (_samples, ms) => metrics.runSeconds.observe({ model: m }, ms / 1000),
      });
      batchers.set(key, b);
    }
    return b;
  };

  const tenantOf = (req: FastifyRequest, body: { tenant?: string }): string => {
    const h = req.headers[TENANT_HEADER];
    const header = Array.isArray(h) ? h[0] : h;
    if (header !== undefined && body.tenant !== undefined && header !== body.tenant) {
      throw new HttpError(400, `tenant given twice and differently: header ${TENANT_HEADER}='${header}', body tenant='${body.tenant}'`, 'tenant');
    }
    const t = header ?? body.tenant ?? 'default';
    if (!isSafeName(t)) throw new HttpError(400, `tenant ${JSON.stringify(t)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`, 'tenant');
    return t;
  };

  // ---------------------------------------------------------------------------------------------
  // Service routes
  // ---------------------------------------------------------------------------------------------

  app.get('/healthz', { config: { open: true }, schema: { security: [], summary: 'Liveness: the models loaded and the adaptation method', tags: ['service'] } }, async () => ({
    status: 'ok', models: [...models.keys()], method: method ?? 'none', tenants: pool.size, uptimeSeconds: Math.round(process.uptime()),
  }));

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', tags: ['service'] } }, async (_req, reply) => {
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  app.get('/docs/json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/v1/models', { schema: { summary: 'The models served, with their input and output signatures', tags: ['models'] } }, async () => ({
    models: [...models].map(([k, m]) => ({
      name: k, inputs: m.inputs.map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape })), outputs: m.outputs.map((o) => ({ name: o.name, dtype: o.dtype, shape: o.shape })),
      fingerprint: modelFingerprint(m),
    })),
    method: method ?? 'none',
  }));

  app.post('/v1/models/:model/predict', {
    schema: {
      summary: 'Predict a batch; with adaptation on, the tenant\'s own state adapts on it',
      tags: ['inference'],
      params: modelParams,
      headers: { type: 'object', properties: { [TENANT_HEADER]: { type: 'string' } } },
      body: {
        type: 'object', required: ['inputs'], additionalProperties: false,
        properties: {
          inputs: inputsSchema,
          tenant: { type: 'string', description: `the tenant (or header ${TENANT_HEADER}); default 'default'` },
          output: { type: 'string', enum: ['probabilities', 'logits'], default: 'probabilities' },
          ...adapterRef,
        },
      },
      response: { 200: predictResponse, '4xx': errorSchema },
    },
  }, async (req) => {
    const { model: m } = req.params as { model: string };
    const body = req.body as { inputs: unknown; tenant?: string; output: 'probabilities' | 'logits'; adapter?: string; adapterVersion?: number };
    const base = getModel(m);
    const tenant = tenantOf(req, body);
    const input = base.inputs[0]!;
    const ids = tokenInputs.get(m);
    let x: Tensor;
    if (ids) {
      if (isImageInputs(body.inputs)) throw new HttpError(400, `model '${m}' takes token ids in '${input.name}' (or texts), not images`, 'bad-token');
      if (body.inputs && typeof body.inputs === 'object' && 'base64' in body.inputs) throw new HttpError(400, `model '${m}' takes token ids: give nested arrays or { dims, data }, not base64 float32`, 'bad-token');
      const parsed = isTextInputs(body.inputs) ? textsToTensor(body.inputs, texts.get(m), m, maxBatch) : toInputTensor(body.inputs, input.name, input.shape, maxBatch, 'float64');
      x = toTokenTensor(parsed, ids, ids.vocab);
    } else {
      x = isImageInputs(body.inputs) ? await imagesToTensor(body.inputs, input.name, input.shape, maxBatch, opts.images) : toInputTensor(body.inputs, input.name, input.shape, maxBatch);
    }
    if (body.adapterVersion !== undefined && body.adapter === undefined) throw new HttpError(400, 'adapterVersion needs adapter', 'schema');
    const { model, ref } = body.adapter ? await withRegistryAdapter(m, body.adapter, body.adapterVersion) : { model: base, ref: undefined };
    const n = x.dims[0]!;
    const out: Record<string, unknown> = { model: m, tenant, method: method ?? 'none', adapter: ref ?? null };
    const emit = (logits: Float32Array | undefined, probs: Float32Array, C: number, ids: string[]) => {
      out.ids = ids;
      out.predictions = argmaxRows(probs, n, C);
      if (body.output === 'logits') out.logits = rows(logits!, n, C);
      else out.probabilities = rows(probs, n, C);
    };
    if (!method) {
      // Plain inference on an immutable model: no state, no queue; joined with concurrent requests.
      const l = await batcherFor(m, ref, model, x.dims).run(x);
      const C = l.length / n;
      const seq = plainSeq++;
      emit(l, softmaxRows(l, n, C), C, Array.from({ length: n }, (_, i) => `p${seq}:${i}`));
    } else if (method === CONTINUAL) {
      if (body.output === 'logits') throw new HttpError(400, `method 'continual' returns probabilities only (they are corrected after the logits); ask for output 'probabilities'`, 'schema');
      await pool.use(m, tenant, model, ref, async (s) => {
        const r = await s.controller!.predict(x);
        const C = r.probs.length / n;
        emit(undefined, r.probs, C, r.ids);
        out.adaptation = { level: r.level, signals: r.signals, events: r.events };
        if (r.level >= 2) metrics.adaptationSteps.inc({ model: m, method });
        for (const e of r.events) {
          metrics.controllerEvents.inc({ model: m, kind: e.kind });
          if (e.kind === 'drift') metrics.driftAlarms.inc({ model: m });
        }
      });
    } else {
      await pool.use(m, tenant, model, ref, async (s) => {
        const r = await s.tta!.predict(x);
        const C = r.logits.dims[1]!;
        const l = r.logits.data as Float32Array;
        emit(l, softmaxRows(l, n, C), C, Array.from({ length: n }, (_, i) => `${s.seq}:${i}`));
        out.adaptation = { used: r.info.used, ...(r.info.loss !== undefined ? { loss: r.info.loss } : {}), skipped: r.info.skipped, resets: r.info.resets, ms: r.info.ms };
        if (r.info.used > 0) metrics.adaptationSteps.inc({ model: m, method });
        if (r.info.skipped > s.skipped) metrics.skippedSteps.inc({ model: m, method }, r.info.skipped - s.skipped);
        s.skipped = r.info.skipped;
      });
    }
    metrics.predictions.inc({ model: m, method: method ?? 'none' }, n);
    return out;
  });

  app.post('/v1/models/:model/feedback', {
    schema: {
      summary: 'Labels for earlier predictions (by id), for the continual controller',
      tags: ['inference'],
      params: modelParams,
      body: {
        type: 'object', required: ['ids', 'labels'], additionalProperties: false,
        properties: {
          ids: { type: 'array', items: { type: 'string' }, maxItems: 100000 },
          labels: { type: 'array', items: { type: 'integer' }, maxItems: 100000 },
          tenant: { type: 'string' },
          ...adapterRef,
        },
      },
    },
  }, async (req) => {
    const { model: m } = req.params as { model: string };
    const body = req.body as { ids: string[]; labels: number[]; tenant?: string; adapter?: string; adapterVersion?: number };
    getModel(m);
    const tenant = tenantOf(req, body);
    if (method !== CONTINUAL) {
      throw new HttpError(409, `method '${method ?? 'none'}' takes no labels: feedback needs a server started with --method continual (the escalation controller learns from delayed labels)`);
    }
    if (body.ids.length !== body.labels.length) throw new HttpError(400, `${body.ids.length} ids but ${body.labels.length} labels`);
    const { model, ref } = body.adapter ? await withRegistryAdapter(m, body.adapter, body.adapterVersion) : { model: getModel(m), ref: undefined };
    const report = await pool.use(m, tenant, model, ref, (s) => s.controller!.feedback(body.ids, body.labels));
    for (const k of ['accepted', 'unknown', 'expired', 'invalid'] as const) if (report[k]) metrics.feedback.inc({ model: m, outcome: k }, report[k]);
    return { model: m, tenant, ...report };
  });

  app.get('/v1/models/:model/tenants', { schema: { summary: 'Tenants with a session in memory and tenants with saved state', tags: ['tenants'], params: modelParams } }, async (req) => {
    const { model: m } = req.params as { model: string };
    getModel(m);
    return { model: m, active: pool.list(m), saved: await registry.listTenants(m) };
  });

  app.delete('/v1/models/:model/tenants/:tenant', {
    config: { write: true },
    schema: { summary: 'Reset a tenant: drop its sessions and saved state (it starts again from the base model)', tags: ['tenants'], security: [{ bearer: [] }], params: { type: 'object', required: ['model', 'tenant'], properties: { model: name, tenant: name } } },
  }, async (req) => {
    const { model: m, tenant } = req.params as { model: string; tenant: string };
    getModel(m);
    return { model: m, tenant, ...(await pool.reset(m, tenant)) };
  });

  // ---------------------------------------------------------------------------------------------
  // Registry routes
  // ---------------------------------------------------------------------------------------------

  app.get('/v1/models/:model/adapters', { schema: { summary: 'Adapter names stored for a model', tags: ['adapters'], params: modelParams } }, async (req) => {
    const { model: m } = req.params as { model: string };
    getModel(m);
    return { model: m, adapters: await registry.list(m) };
  });

  app.get('/v1/models/:model/adapters/:name', {
    schema: {
      summary: 'An adapter version (current unless ?version=N) with both files: config as text, weights as base64',
      tags: ['adapters'], params: adapterParams, querystring: { type: 'object', properties: { version: { type: 'integer', minimum: 1 } } },
    },
  }, async (req) => {
    const { model: m, name: a } = req.params as { model: string; name: string };
    const { version } = req.query as { version?: number };
    getModel(m);
    const s = await registry.get(m, a, version);
    if (!s) throw new HttpError(404, version ? `adapter '${a}' of model '${m}' has no version ${version}` : `model '${m}' has no adapter '${a}'`);
    const { files, ...rest } = s;
    return { ...rest, config: files.config, weights: Buffer.from(files.weights.buffer, files.weights.byteOffset, files.weights.byteLength).toString('base64') };
  });

  app.get('/v1/models/:model/adapters/:name/files/:file', {
    schema: {
      summary: 'One file of an adapter version, raw (for curl -o)', tags: ['adapters'],
      params: { type: 'object', required: ['model', 'name', 'file'], properties: { model: name, name, file: { type: 'string', enum: [CONFIG_FILE, WEIGHTS_FILE] } } },
      querystring: { type: 'object', properties: { version: { type: 'integer', minimum: 1 } } },
    },
  }, async (req, reply) => {
    const { model: m, name: a, file } = req.params as { model: string; name: string; file: string };
    const { version } = req.query as { version?: number };
    getModel(m);
    const s = await registry.get(m, a, version);
    if (!s) throw new HttpError(404, `model '${m}' has no adapter '${a}'${version ? ` version ${version}` : ''}`);
    void reply.header('x-refit-adapter-version', String(s.version)).header('x-refit-sha256', file === WEIGHTS_FILE ? s.sha256 : s.configSha256);
    if (file === CONFIG_FILE) return reply.type('application/json').send(s.files.config);
    return reply.type('application/octet-stream').send(Buffer.from(s.files.weights.buffer, s.files.weights.byteOffset, s.files.weights.byteLength));
  });

  app.put('/v1/models/:model/adapters/:name', {
    bodyLimit: opts.adapterBodyLimit ?? 64 * 1024 * 1024,
    config: { write: true },
    schema: {
      summary: 'Store a new version of an adapter (HF PEFT layout) and make it current; it is checked against the model first',
      description: `Body: { config: the ${CONFIG_FILE} text (or object), weights: ${WEIGHTS_FILE} as base64, meta?: { method, metrics, note, … } }.`,
      tags: ['adapters'], security: [{ bearer: [] }], params: adapterParams,
      body: {
        type: 'object', required: ['config', 'weights'], additionalProperties: false,
        properties: { config: { anyOf: [{ type: 'string' }, { type: 'object', additionalProperties: true }] }, weights: { type: 'string', contentEncoding: 'base64' }, meta: metaSchema },
      },
    },
  }, async (req, reply) => {
    const { model: m, name: a } = req.params as { model: string; name: string };
    const body = req.body as { config: string | Record<string, unknown>; weights: string; meta?: AdapterMeta };
    const base = getModel(m);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.weights)) throw new HttpError(400, `weights must be ${WEIGHTS_FILE} encoded as base64`);
    const w = Buffer.from(body.weights, 'base64');
    const files = { weights: new Uint8Array(w.buffer, w.byteOffset, w.byteLength), config: typeof body.config === 'string' ? body.config : `${JSON.stringify(body.config, null, 2)}\n` };
    withAdapterFiles(base, a, files); // throws PeftError (400) naming the tensor or key that does not fit
    const meta: AdapterMeta = { baseModelHash: modelFingerprint(base), ...(body.meta ?? {}) };
    const v = await registry.put(m, a, files, meta);
    metrics.registryWrites.inc({ op: 'put' });
    return reply.status(201).send(v);
  });

  app.delete('/v1/models/:model/adapters/:name', {
    config: { write: true },
    schema: { summary: 'Delete an adapter and all its versions', tags: ['adapters'], security: [{ bearer: [] }], params: adapterParams },
  }, async (req) => {
    const { model: m, name: a } = req.params as { model: string; name: string };
    getModel(m);
    if (!(await registry.delete(m, a))) throw new HttpError(404, `model '${m}' has no adapter '${a}'`);
    metrics.registryWrites.inc({ op: 'delete' });
    forgetAdapter(m, a);
    await pool.dropAdapter(m, a);
    return { model: m, name: a, deleted: true };
  });

  app.get('/v1/models/:model/adapters/:name/versions', {
    schema: { summary: 'Every stored version of an adapter, oldest first', tags: ['adapters'], params: adapterParams },
  }, async (req) => {
    const { model: m, name: a } = req.params as { model: string; name: string };
    getModel(m);
    const versions = await registry.versions(m, a);
    if (versions.length === 0) throw new HttpError(404, `model '${m}' has no adapter '${a}'`);
    return { model: m, name: a, current: versions.find((v) => v.current)?.version ?? null, versions };
  });

  app.post('/v1/models/:model/adapters/:name/rollback', {
    config: { write: true },
    schema: {
      summary: 'Make an earlier version current again (moves a pointer: instant, nothing copied or deleted)', tags: ['adapters'], security: [{ bearer: [] }],
      params: adapterParams, querystring: { type: 'object', required: ['version'], properties: { version: { type: 'integer', minimum: 1 } } },
    },
  }, async (req) => {
    const { model: m, name: a } = req.params as { model: string; name: string };
    const { version } = req.query as { version: number };
    getModel(m);
    const v = await registry.rollback(m, a, version);
    metrics.registryWrites.inc({ op: 'rollback' });
    return v;
  });

  app.post('/v1/models/:model/adapters/:name/versions/:version/good', {
    config: { write: true },
    schema: {
      summary: 'Mark a version good (kept by retention); ?good=false clears the mark', tags: ['adapters'], security: [{ bearer: [] }],
      params: { type: 'object', required: ['model', 'name', 'version'], properties: { model: name, name, version: { type: 'integer', minimum: 1 } } },
      querystring: { type: 'object', properties: { good: { type: 'boolean', default: true } } },
    },
  }, async (req) => {
    const { model: m, name: a, version } = req.params as { model: string; name: string; version: number };
    const { good } = req.query as { good: boolean };
    getModel(m);
    const v = await registry.markGood(m, a, version, good);
    metrics.registryWrites.inc({ op: 'good' });
    return v;
  });

  return app;
}

