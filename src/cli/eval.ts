// `refit eval model.onnx --data …`: accuracy and cross-entropy on a labelled set (inference only).
import { loadModel } from '../model.ts';
import { progressBar, positiveInt, finiteNumber, range, preprocessOptions } from './common.ts';
import { classifyTask } from './train-task.ts';

export interface EvalOptions {
  data: string;
  labels?: string;
  labelColumn?: string;
  batchSize?: string | number;
  logits?: string;
  /** Token models: the padding token id (attention_mask 0 there). */
  padToken?: string | number;
  /** Pixel data's per-channel normalisation, comma-separated (torchvision's Normalize). */
  mean?: string;
  std?: string;
  /** Image folders: a size for the shorter side before a centre crop, or 'stretch'. */
  resize?: string;
  /** A Hugging Face preprocessor_config.json (or its folder): --resize, --mean and --std where not given (./hf-preprocessor.ts). */
  preprocessor?: string;
  json?: boolean;
}

export interface EvalResult {
  model: string;
  data: string;
  samples: number;
  accuracy: number;
  loss: number;
  seconds: number;
}

export async function runEval(modelPath: string, o: EvalOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const batchSize = positiveInt('--batch-size', o.batchSize ?? 256);
  const padToken = o.padToken !== undefined ? finiteNumber('--pad-token', o.padToken, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  const prep = preprocessOptions(o, o.json);
  const model = await loadModel(modelPath);
  try {
    const task = await classifyTask(model, { data: o.data, labels: o.labels, labelColumn: o.labelColumn, logits: o.logits, padToken, ...prep, needLabels: 'eval' }, 'refit eval');
    const n = task.data.samples;
    const bar = progressBar(!o.json, 'samples');
    bar?.start(n, 0, { label: 'eval', metrics: '' });
    const r = await task.evaluate(model, range(0, n), batchSize, (done) => bar?.update(done));
    bar?.stop();
    return { model: modelPath, data: o.data, samples: n, accuracy: r.accuracy, loss: r.loss, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await model.release();
  }
}

export function formatEval(r: EvalResult): string {
  return `${r.model} on ${r.data}: accuracy ${(100 * r.accuracy).toFixed(2)}% (${Math.round(r.accuracy * r.samples)}/${r.samples}), loss ${r.loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`;
}
