// `refit serve`: load the models, open the registry, listen, and shut down cleanly on SIGINT or
// SIGTERM (tenant queues drained, tenant state saved, registry closed) before exiting.
// The command and its options are declared in ./main.ts (ServeCliOptions); this file is the work.
import { basename, extname } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadModel, type RefitModel } from '../model.ts';
import { openRegistry } from '../registry/open.ts';
import { isSafeName } from '../registry/types.ts';
import { buildServer } from '../serve/server.ts';
import { modelIO, preprocessOptions, finiteNumber, parseMethodOptions } from './common.ts';
import { fixedSequenceLength, isTokenModel } from './token-inputs.ts';
import { positionTableRows, withTokenInputs } from '../onnx/token-companions.ts';
import { tokenModelIO, tokenSourceIds } from './token-stream.ts';
import { methodSetup, type MethodSetup } from './method-setup.ts';
import { textEncoder, textSource } from './text-tokens.ts';
import type { EncodeTexts } from '../serve/texts.ts';

export interface RunServeOptions {
  /** Models, each `path` (named after the file) or `name=path`. */
  model: string[] | string;
  port?: string | number;
  host?: string;
  /**
   * The registry: a SQLite file (or `sqlite:PATH`), or `postgres://…` with `blobs`; unset: an
   * in-memory SQLite registry (lost at exit; a warning says so).
   */
  registry?: string;
  /** Blob store of a PostgreSQL registry: `file:DIR` or `s3://bucket?endpoint=…`. */
  blobs?: string;
  /** 'none', a TTA method or 'continual'. */
  method?: string;
  /** Method options as a JSON object or an object (e.g. '{"lr": 0.0001}'); for continual, on top of the recommended set. */
  methodOptions?: string | Record<string, unknown>;
  /**
   * Labelled in-distribution data, read for each model (./method-setup.ts, as `refit adapt`):
   * the controller's calibration, deep learner and input alignment; EATA's Fisher and the like.
   */
  source?: string;
  sourceLabels?: string;
  /** Continual with `source`: level 3 runs the deep learner; false keeps it on the normalization adapters. @default true */
  deep?: boolean;
  /** --deep-params: what the deep learner adapts, 'all' or 'norm' (default: 'norm' on models over 1M parameters). */
  deepParams?: string;
  /** Input alignment to `source`'s statistics; default on for continual with `source`. */
  inputAlign?: boolean;
  /** Image inputs and a `source` image folder: a size for the shorter side before a centre crop, or 'stretch' (../data/image-resize.ts). */
  resize?: string;
  /** A Hugging Face preprocessor_config.json (or its folder): --resize, --mean and --std where not given (./hf-preprocessor.ts). */
  preprocessor?: string;
  /** Token models: the padding id (attention_mask 0 there); requests send the ids alone. */
  padToken?: string | number;
  /** Token models: the tokenizer for text requests (tokenizer.json or its folder); default each model's own beside it (./text-tokens.ts). */
  tokenizer?: string;
  /** Token models, text requests: tokens a text at most. */
  maxLength?: string | number;
  /** Origins of web pages allowed to call the service (CORS): comma-separated, or '*'. */
  cors?: string;
  /** Image inputs and pixel `source` data: per-channel normalisation, comma-separated (torchvision's Normalize). */
  mean?: string;
  std?: string;
  /** Bearer token for the registry's write routes; default: the REFIT_TOKEN environment variable. */
  token?: string;
  /** Every route but /healthz needs the token (reads closed). */
  protectReads?: boolean;
  maxTenants?: string | number;
  maxBatch?: string | number;
  persistEvery?: string | number;
  /** Micro-batching of plain predictions: the longest wait in ms for companions (0: off). @default 2 */
  microBatchWait?: string | number;
  /** Micro-batching: samples at which a joined batch is sent at once. @default 32 */
  microBatchMax?: string | number;
  /** Worker threads for plain predictions (0: on the main thread). @default 2 */
  inferenceWorkers?: string | number;
  /** onnxruntime threads per inference worker. @default 1 */
  inferenceThreads?: string | number;
  /** Request logs (JSON lines) and stack traces. */
  debug?: boolean;
  /** Install SIGINT/SIGTERM handlers that close and exit the process. @default true */
  signals?: boolean;
  /** Where status lines go. @default console.error */
  log?: (line: string) => void;
}

export interface ServeHandle {
  app: FastifyInstance;
  url: string;
  /** Stop taking requests, finish queued ones, save tenant state, close the registry and release the models. */
  close(): Promise<void>;
}

/** `name=path` or `path` → [name, path]; the name must be a safe URL segment. */
export function parseModelSpec(spec: string): [string, string] {
  const eq = spec.indexOf('=');
  const [name, path] = eq > 0 ? [spec.slice(0, eq), spec.slice(eq + 1)] : [basename(spec, extname(spec)).replace(/[^A-Za-z0-9._-]/g, '-'), spec];
  if (!isSafeName(name)) throw new Error(`--model ${spec}: the name '${name}' is not allowed in a URL; give name=path with 1-128 letters, digits, '.', '_' or '-'`);
  if (!path) throw new Error(`--model ${spec}: no path after '='`);
  return [name, path];
}

const int = (flag: string, v: string | number | undefined, min: number): number | undefined => {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer ≥ ${min}, got '${v}'`);
  return n;
};

export async function runServe(opts: RunServeOptions): Promise<ServeHandle> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const specs = (Array.isArray(opts.model) ? opts.model : opts.model ? [opts.model] : []).map(parseModelSpec);
  if (specs.length === 0) throw new Error('refit serve needs at least one --model (path or name=path), e.g. --model cnn=models/fmnist-cnn.onnx');
  const dup = specs.map(([n]) => n).find((n, i, a) => a.indexOf(n) !== i);
  if (dup) throw new Error(`--model: the name '${dup}' is given twice; name them with name=path`);
  const port = int('--port', opts.port ?? 8080, 0)!;
  if (port > 65535) throw new Error(`--port must be at most 65535, got ${port}`);
  const microBatchWait = int('--micro-batch-wait', opts.microBatchWait, 0);
  const microBatchMax = int('--micro-batch-max', opts.microBatchMax, 1);
  const token = opts.token ?? process.env.REFIT_TOKEN ?? undefined;
  if (opts.protectReads && !token) throw new Error('--protect-reads closes every route but /healthz behind the bearer token; give --token <token> or set REFIT_TOKEN');
  const methodOptions = parseMethodOptions(opts.methodOptions);

  const prep = preprocessOptions(opts);
  const { pixels, resize } = prep;
  const padToken = opts.padToken !== undefined ? finiteNumber('--pad-token', opts.padToken, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  const method = opts.method && opts.method !== 'none' ? opts.method : undefined;
  if (!method && (opts.source || opts.inputAlign)) throw new Error(`--source and --input-align are for an adaptation method; give --method`);
  if (opts.deep === false && method !== 'continual') throw new Error(`--no-deep is for --method continual (it turns off the controller's level-3 deep learner)`);
  if (opts.deepParams !== undefined && method !== 'continual') throw new Error(`--deep-params is for --method continual (what its level-3 deep learner adapts)`);

  const textOptions = textSource('', { ...(opts.tokenizer !== undefined ? { tokenizer: opts.tokenizer } : {}), ...(opts.maxLength !== undefined ? { maxLength: opts.maxLength } : {}) }, padToken);
  const models = new Map<string, RefitModel>();
  const texts = new Map<string, EncodeTexts>();
  const pads = new Map<string, number>(); // per token model: --pad-token, else its tokenizer's
  // Per model: the method's options (the controller's recommended set, what --source gives) and calibration batches.
  const setups = new Map<string, MethodSetup>();
  for (const [name, path] of specs) {
    try {
      // Without onnxruntime's memory arena every tenant's sessions free what they do not hold:
      // about 6.5 MB per Tent tenant on the shipped CNN instead of 31 (docs/serve.md).
      let model = await loadModel(path, { memoryArena: false });
      // Text requests: the model's tokenizer (--tokenizer, or its own beside it), padding with the id the mask leaves out.
      const encoder = isTokenModel(model) ? textEncoder({ ...textOptions, modelPath: path, fixedLength: fixedSequenceLength(model), positions: positionTableRows(model) }) : null;
      if (!isTokenModel(model) && opts.tokenizer !== undefined && specs.length === 1) throw new Error(`--tokenizer is for a model of token ids; this one takes ${model.inputs[0]?.dtype}`);
      const pad = padToken ?? encoder?.padToken;
      if (pad !== undefined && isTokenModel(model)) pads.set(name, pad);
      // A pair's token_type_ids, where the model takes them and the tokenizer marks them, rebuilt from the ids in the graph.
      const typed = model.inputs.some((i) => i.name === 'token_type_ids') && encoder?.segments.marked === true;
      const separator = typed ? encoder!.segments.separator : undefined;
      if (encoder) {
        const masked = model.inputs.some((i) => i.name === 'attention_mask');
        texts.set(name, (t) => {
          if (typed && separator === undefined && t.some((x) => typeof x !== 'string')) throw new Error(`the model takes token_type_ids and ${encoder.path} marks a pair's second segment without a separator token, which the served model cannot rebuild from the ids; send one text each`);
          const r = encoder.encode(t);
          if (!masked && r.values.includes(pad ?? -1) && t.length > 1) throw new Error(`the model has no attention_mask, so padding would change its answers; send texts of one token length, or one text a request`);
          return r;
        });
        log(`refit serve: model ${name} takes texts${separator !== undefined || !typed ? ' and text pairs' : ''}, tokenized by ${encoder.path}`);
      }
      // A token model's attention_mask & co. made from its ids inside the graph: requests send the ids alone.
      if (isTokenModel(model) && model.inputs.length > 1) {
        const wrapped = withTokenInputs(model, { ...(pad !== undefined ? { padToken: pad } : {}), ...(separator !== undefined ? { segmentAfter: separator } : {}) });
        await model.release();
        model = wrapped;
      }
      models.set(name, model);
      // The controller's deep learner warms up once per model before the server listens: its
      // progress is worth showing. RMT's per-tenant warm-ups would only be noise in the log.
      const progress = method === 'continual' ? { log: (line: string) => log(`${line} (model ${name})`) } : {};
      const tokens = isTokenModel(model);
      if (tokens && (opts.sourceLabels || opts.inputAlign)) throw new Error(`${[opts.sourceLabels && '--source-labels', opts.inputAlign && '--input-align'].filter(Boolean).join(', ')}: for image data; this model reads token ids`);
      // A token model's --source: in-distribution ids (the controller's entropy reference, EATA's Fisher).
      const tokenSource = tokens && opts.source ? tokenSourceIds(model, opts.source, '--source', { ...textOptions, modelPath: path, ...(pad !== undefined ? { padToken: pad } : {}) }) : undefined;
      const needsSetup = !!method && (method === 'continual' || !!opts.source || !!opts.inputAlign);
      const needsIO = needsSetup || !!prep.processorSize; // modelIO checks the processor's size
      const io = !needsIO ? null : tokens ? tokenModelIO(model, undefined, 'refit serve on a token model') : modelIO(model, undefined, prep);
      if (io && needsSetup) setups.set(name, await methodSetup(method, model, io, opts, { batchSize: 64, shortWarmup: true, ...progress, ...(tokenSource ? { tokenSource } : {}) }));
    } catch (e) {
      await Promise.all([...models.values()].map((m) => m.release()));
      throw new Error(`--model ${name}=${path}: ${(e as Error).message}`);
    }
  }
  // The controller pads a token model's labelled rows with the pad token the model masks.
  const padFor = (name: string) => (method === 'continual' && pads.has(name) ? { padToken: pads.get(name)! } : {});
  const perModel = (name: string) => ({ ...setups.get(name)?.options, ...padFor(name), ...methodOptions });
  let registry;
  try {
    registry = await openRegistry(opts.registry ?? ':memory:', opts.blobs ? { blobs: opts.blobs } : {});
  } catch (e) {
    await Promise.all([...models.values()].map((m) => m.release()));
    throw new Error(`--registry: ${(e as Error).message}`);
  }
  let app: FastifyInstance;
  const preparing = [...setups].filter(([, s]) => s.deepLearner).map(([name]) => name);
  if (preparing.length) log(`refit serve: calibrating and warming up the deep learner on --source before listening (models: ${preparing.join(', ')})`);
  try {
    app = await buildServer({
      models, registry, method: opts.method, methodOptions: setups.size ? perModel : methodOptions, calibration: (name) => setups.get(name)?.calibration,
      texts, token, protectReads: opts.protectReads === true, images: { ...(resize !== undefined ? { resize } : {}), ...(pixels ? { pixels } : {}) },
      maxTenants: int('--max-tenants', opts.maxTenants, 1), maxBatch: int('--max-batch', opts.maxBatch, 1), persistEvery: int('--persist-every', opts.persistEvery, 0),
      inferenceWorkers: int('--inference-workers', opts.inferenceWorkers ?? 2, 0), inferenceThreads: int('--inference-threads', opts.inferenceThreads, 1),
      microBatch: { ...(microBatchWait !== undefined ? { maxWaitMs: microBatchWait } : {}), ...(microBatchMax !== undefined ? { maxSamples: microBatchMax } : {}) },
      logger: opts.debug ? { level: 'info' } : false,
      ...(opts.cors !== undefined ? { corsOrigins: opts.cors.trim() === '*' ? '*' as const : opts.cors.split(',').map((o) => o.trim()).filter(Boolean) } : {}),
    });
    await app.listen({ port, host: opts.host ?? '127.0.0.1' });
  } catch (e) {
    await registry.close();
    throw e;
  }
  const addr = app.server.address();
  const url = typeof addr === 'object' && addr ? `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);

  let closing: Promise<void> | undefined;
  const close = () => (closing ??= (async () => {
    await app.close(); // stops listening, drains tenant queues, saves tenant state
    await registry.close();
    await Promise.all([...models.values()].map((m) => m.release()));
  })());

  if (opts.signals !== false) {
    const onSignal = (sig: NodeJS.Signals) => {
      if (closing) {
        log(`refit serve: ${sig} again: exiting without waiting`);
        process.exit(1);
      }
      log(`refit serve: ${sig}: finishing requests and saving tenant state`);
      close().then(() => {
        log('refit serve: stopped');
        process.exit(0);
      }, (e: Error) => {
        log(`refit serve: shutdown failed: ${opts.debug ? e.stack : e.message}`);
        process.exit(1);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  if (!opts.registry) log('refit serve: no --registry given: adapters and tenant state live in memory and are lost at exit');
  const access = !token ? 'every route open' : opts.protectReads ? 'token needed on every route but /healthz' : 'token needed for writes, reads open';
  log(`refit serve: listening on ${url} (models: ${[...models.keys()].join(', ')}; adaptation: ${method ?? 'none'}${describeSetup([...setups.values()][0])}; registry: ${opts.registry ?? 'in memory'}; ${access}; OpenAPI: ${url}/docs/json)`);
  return { app, url, close };
}

/** What --source and the recommended options brought, for the start-up line. */
function describeSetup(s: MethodSetup | undefined): string {
  if (!s) return '';
  const parts = [s.calibration && 'calibrated on --source', s.deepLearner && `deep learner${s.deepParams === 'norm' ? " over the normalization layers' scales and shifts" : ''}`, s.inputAlign && 'input alignment'].filter(Boolean);
  return parts.length ? ` (${parts.join(', ')})` : '';
}
