// One training step of the shipped models, written against refit's public API only, so the very
// same code runs in Node (src/index.ts, onnxruntime-node) and in the page (src/web.ts bundled,
// onnxruntime-web): test/web/equality.test.ts compares the two.
import type * as Web from '../../src/web.ts';

export type Refit = Pick<typeof Web, 'loadModel' | 'peft' | 'losses' | 'f32' | 'i64' | 'Rng'>;

export interface CaseSpec {
  model: 'cnn' | 'vit';
  adapter: 'full' | 'lora';
  batch: number;
  /** Seeds the images and labels. */
  seed: number;
}

export const caseName = (c: CaseSpec) => `${c.model}-${c.adapter}-b${c.batch}`;

export interface CaseResult {
  loss: number;
  grads: Record<string, Float32Array>;
  /** First run: step graph build + session creation + one step. */
  firstMs: number;
  /** The step graph's build phases as TrainStep timed them (ms), session creation included ('session'). */
  timings: Record<string, number>;
  /** Later runs of the same step, one entry per run. */
  stepMs: number[];
  /** Every ReLU input of the forward, concatenated in graph order (withReluInputs). */
  reluInputs?: Float32Array;
}

const ADAPTER = 'web';

/** Images uniform in [0, 1] and labels 0–9, from the case's seed. */
export function batchOf(refit: Refit, c: CaseSpec) {
  const r = new refit.Rng(c.seed);
  const x = new Float32Array(c.batch * 28 * 28);
  for (let i = 0; i < x.length; i++) x[i] = r.uniform();
  const y = new BigInt64Array(c.batch);
  for (let i = 0; i < c.batch; i++) y[i] = BigInt(r.int(10));
  return { x: refit.f32([c.batch, 1, 28, 28], x), y: refit.i64([c.batch], y) };
}

/**
 * The model (LoRA applied for 'lora': rank 4 on every convolution of the CNN, on attention q and v
 * of the ViT, with B drawn non-zero so A has gradients) and its train step, BatchNorm in train mode.
 */
export async function prepare(refit: Refit, bytes: Uint8Array, c: CaseSpec, outputs?: (model: Web.RefitModel) => string[], session: Web.SessionOptions = {}) {
  let model = await refit.loadModel(bytes, session);
  let trainable = model.parameterNames();
  if (c.adapter === 'lora') {
    const p = refit.peft.withAdapter(model, ADAPTER, refit.peft.lora({ targets: c.model === 'cnn' ? /conv$/ : /attn\.(q|v)$/, rank: 4, alpha: 8, seed: 1 }));
    const r = new refit.Rng(7);
    const values = new Map<string, Float32Array>();
    for (const [k, t] of p.adapterValues(ADAPTER)) if (k.includes('lora_B')) values.set(k, r.fill(new Float32Array(t.data.length), 0.05));
    p.setParams(values);
    model = p;
    trainable = p.trainableNames(ADAPTER);
  }
  const step = model.compileTrainStep({ trainable, loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', ...(outputs ? { outputs: outputs(model) } : {}) });
  return { model, step };
}

export interface RunOptions {
  /** Timed runs after the first. */
  repeats?: number;
  session?: Web.SessionOptions;
  /** Also output every ReLU input (see reluInputs) from the same step. */
  withReluInputs?: boolean;
}

export async function runCase(refit: Refit, bytes: Uint8Array, c: CaseSpec, o: RunOptions = {}): Promise<CaseResult> {
  let relus: string[] = [];
  const reluNames = (model: Web.RefitModel) => (relus = model.ir.graph.nodes.filter((n) => n.opType === 'Relu').map((n) => n.inputs[0]!));
  const { step } = await prepare(refit, bytes, c, o.withReluInputs ? reluNames : undefined, o.session);
  const batch = batchOf(refit, c);
  let t = performance.now();
  const first = await step.run(batch);
  const firstMs = performance.now() - t;
  const { graph } = await step.compile({ x: { dtype: 'float32', dims: [...batch.x.dims] } });
  const stepMs: number[] = [];
  for (let i = 0; i < (o.repeats ?? 0); i++) {
    t = performance.now();
    await step.run(batch);
    stepMs.push(performance.now() - t);
  }
  await step.release();
  const result: CaseResult = { loss: first.loss, grads: Object.fromEntries(first.grads), firstMs, timings: { ...graph.timings }, stepMs };
  if (o.withReluInputs) result.reluInputs = concat(relus.map((name) => first.outputs[name]!.data as Float32Array));
  return result;
}

function concat(parts: Float32Array[]): Float32Array {
  const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return all;
}

/**
 * The smallest |x| over every ReLU input of the train-mode forward (BatchNorm with batch
 * statistics): how far the case's inputs are from a ReLU kink. Two onnxruntime builds round
 * differently (about 1e-7 relative), and an element that lands on the other side of zero moves
 * the gradients of every earlier layer through the batch statistics (by up to 2.5% relative in
 * the first try), so the equality test uses inputs whose margin is well above the rounding.
 */
export async function reluMargin(refit: Refit, bytes: Uint8Array, c: CaseSpec): Promise<number> {
  let m = Infinity;
  for (const v of (await runCase(refit, bytes, c, { withReluInputs: true })).reluInputs!) m = Math.min(m, Math.abs(v));
  return m;
}
