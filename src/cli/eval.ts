// `refit eval model.onnx --data …`: accuracy and cross-entropy on a labelled set (inference only).
import { loadModel } from '../model.ts';
import { modelIO, loadData, evaluateSet, progressBar, positiveInt, range } from './common.ts';

export interface EvalOptions {
  data: string;
  labels?: string;
  labelColumn?: string;
  batchSize?: string | number;
  logits?: string;
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
  const model = await loadModel(modelPath);
  const io = modelIO(model, o.logits);
  const ds = loadData(o.data, io, { labels: o.labels, labelColumn: o.labelColumn, needLabels: 'eval' });
  const bar = progressBar(!o.json, 'samples');
  bar?.start(ds.n, 0, { label: 'eval', metrics: '' });
  const r = await evaluateSet(model, io, ds, range(0, ds.n), batchSize, (done) => bar?.update(done));
  bar?.stop();
  await model.release();
  return { model: modelPath, data: o.data, samples: ds.n, accuracy: r.accuracy, loss: r.loss, seconds: (performance.now() - t0) / 1000 };
}

export function formatEval(r: EvalResult): string {
  return `${r.model} on ${r.data}: accuracy ${(100 * r.accuracy).toFixed(2)}% (${Math.round(r.accuracy * r.samples)}/${r.samples}), loss ${r.loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`;
}
