// `refit train --task regress` / `refit eval --task regress`: a model whose output is values, not
// class scores (a depth estimator's [N, H, W] map, a denoiser's image, keypoint heatmaps, a
// regressor's numbers), trained on inputs as for classification (IDX, .npy, CSV, an image folder)
// and targets of the output's shape (--labels: a float .npy [N, ...the output's dims per sample]),
// with the mean squared error (losses.mse: PyTorch's F.mse_loss) or, by --loss, the L1, smooth L1
// or Huber loss (outliers in the targets weigh less). There is no accuracy: the epoch lines show
// '–' there, and evaluation reports the mean squared and the mean absolute error.
import type { RefitModel } from '../model.ts';
import { f32, formatShape } from '../onnx/tensor.ts';
import { mse, l1, smoothL1, huber } from '../train/losses.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import { readBytes } from '../data/idx-node.ts';
import { modelIO, loadData, batchOf, type Preprocess } from './common.ts';
import { parseNpy } from './data-files.ts';
import type { TrainTask } from './train-task.ts';

export interface RegressOptions extends Preprocess {
  data: string;
  /** Targets: a float .npy [N, ...the output's dims per sample]. */
  labels?: string;
  /** The output the loss reads (default: the model's first output). */
  logits?: string;
  /** Default 'mse'. */
  loss?: RegressionLoss;
}

export const REGRESSION_LOSSES = ['mse', 'l1', 'smooth-l1', 'huber'] as const;
export type RegressionLoss = typeof REGRESSION_LOSSES[number];
const regressionLoss: Record<RegressionLoss, (o: { output: string; target: string }) => LossSpec> = { mse, l1, 'smooth-l1': smoothL1, huber };

export async function regressTask(model: RefitModel, o: RegressOptions, what = 'refit train'): Promise<TrainTask> {
  if (!o.labels) throw new Error(`--task regress learns target values: give them with --labels <file> (a float .npy [N, ...] of the output's shape per sample)`);
  if (!o.labels.toLowerCase().endsWith('.npy')) throw new Error(`--labels ${o.labels}: --task regress reads its targets from a float .npy [N, ...]`);
  const io = modelIO(model, o.logits, o);
  const ds = await loadData(o.data, io, {});
  const t = parseNpy(readBytes(o.labels, 'NPY file'), o.labels);
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`${o.labels}: targets must be float32 or float64, got ${t.dtype}`);
  const [n, ...per] = t.shape as [number, ...number[]];
  if (n !== ds.n) throw new Error(`${o.labels}: ${n} targets for ${ds.n} samples in ${o.data}`);
  // The output's dims per sample: from the export when fixed, else from one sample through the model.
  const out = model.outputs.find((v) => v.name === io.logits)!;
  const fixed = out.shape?.slice(1).every((d) => typeof d === 'number' && d > 0);
  const want = fixed ? out.shape!.slice(1) as number[] : (await model.run({ [io.spec.input]: batchOf(ds, [0]).x }, { outputs: [io.logits] }))[io.logits]!.dims.slice(1);
  if (per.join() !== want.join()) throw new Error(`${o.labels}: each target is ${formatShape(per)}, and the output '${io.logits}' gives ${formatShape(want)} per sample; ${what} --task regress needs targets of the output's shape`);
  const size = want.reduce((a, b) => a * b, 1);
  const targets = Float32Array.from(t.values);
  const bad = targets.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new Error(`${o.labels}: target ${bad % size} of sample ${Math.floor(bad / size)} is ${t.values[bad]}; targets must be finite`);
  const targetsOf = (idx: readonly number[]) => {
    const y = new Float32Array(idx.length * size);
    idx.forEach((s, k) => y.set(targets.subarray(s * size, (s + 1) * size), k * size));
    return f32([idx.length, ...want], y);
  };
  const input = (idx: number[]) => ({ [io.spec.input]: batchOf(ds, idx).x });
  return {
    data: { source: `${o.data} + ${o.labels}`, format: `${ds.format}, npy targets`, samples: ds.n, sampleShape: ds.sampleShape },
    logits: io.logits,
    loss: regressionLoss[o.loss ?? 'mse']({ output: io.logits, target: 'refit_targets' }),
    feeds: (idx) => ({ ...input(idx), refit_targets: targetsOf(idx) }),
    score: () => ({ correct: 0, scored: 0 }),
    async evaluate(m, idx, bs, onBatch) {
      let squared = 0, absolute = 0;
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const z = (await m.run(input(part), { outputs: [io.logits] }))[io.logits]!.data as Float32Array;
        const y = targetsOf(part).data as Float32Array;
        for (let i = 0; i < y.length; i++) { const d = z[i]! - y[i]!; squared += d * d; absolute += Math.abs(d); }
        onBatch?.(Math.min(s + bs, idx.length));
      }
      const count = Math.max(1, idx.length * size);
      return { loss: squared / count, accuracy: NaN, meanAbsoluteError: absolute / count };
    },
  };
}
