// `refit train --task segment` / `refit eval --task segment`: a segmenter (logits [N, classes, H,
// W], as torchvision's DeepLabV3, LR-ASPP and FCN export) trained on images and a class per pixel:
// the images as for classification (IDX, .npy, an image folder…), the masks as a .npy of integers
// [N, H, W] or a folder of grayscale or palette PNGs (./masks.ts), at the logits' size (--labels),
// pixels labelled --ignore-index (255 by default, the "void" of VOC-style masks) left out. The
// loss is PyTorch's per-pixel F.cross_entropy; accuracy is pixel accuracy over the labelled
// pixels, and evaluation also gives the mean IoU.
import type { RefitModel } from '../model.ts';
import { i64, type Tensor } from '../onnx/tensor.ts';
import { crossEntropy } from '../train/losses.ts';
import { readBytes } from '../data/idx-node.ts';
import { modelIO, loadData, batchOf, type Preprocess } from './common.ts';
import type { Dataset } from './data-files.ts';
import { parseNpy } from './data-files.ts';
import type { TrainTask } from './train-task.ts';
import { readMaskFolder } from './masks.ts';
import { existsSync, statSync } from 'node:fs';

export interface SegmentOptions extends Preprocess {
  data: string;
  /** Masks: a .npy of class indices [N, H, W], or a folder of PNG masks (./masks.ts). */
  labels?: string;
  logits?: string;
  /** The mask value of pixels that count for nothing. @default 255 */
  ignoreIndex?: number;
}

export const SEGMENT_IGNORE = 255;

/** A segmenter's masks for dataset `ds` (read from `labels`), checked against its logits' classes and size. */
export interface Masks { masks: Float64Array; H: number; W: number; classes: number; ignore: number; format: 'npy' | 'png' }

/**
 * Pixel `p` of image `k` in logits x [b, C, H·W]: its top class, that class's logit, and
 * Σ exp(logit − top logit) (so log-sum-exp = top + log(sum) and the top probability = 1/sum).
 */
export function pixelTop(x: Float32Array, k: number, C: number, per: number, p: number): { arg: number; best: number; sum: number } {
  let best = -Infinity, arg = 0, sum = 0;
  for (let c = 0; c < C; c++) { const v = x[(k * C + c) * per + p]!; if (v > best) { best = v; arg = c; } }
  for (let c = 0; c < C; c++) sum += Math.exp(x[(k * C + c) * per + p]! - best);
  return { arg, best, sum };
}

/**
 * Read and check the masks of `ds` for a segmenter (logits `logits` of `model`, input `input`):
 * the classes and the logits' size come from the export, or else from one image through the model.
 */
export async function segmentMasks(model: RefitModel, input: string, logits: string, ds: Dataset, labels: string, dataName: string, ignore = SEGMENT_IGNORE): Promise<Masks> {
  const folder = existsSync(labels) && statSync(labels).isDirectory();
  if (!folder && !labels.toLowerCase().endsWith('.npy')) throw new Error(`${labels}: masks are read from a .npy of integers [N, H, W] or a folder of PNG masks`);
  let H: number, W: number, values: ArrayLike<number | bigint>;
  if (folder) {
    const r = readMaskFolder(labels, ds.ids, ds.format === 'images');
    [H, W] = [r.height, r.width];
    values = Buffer.concat(r.masks);
  } else {
    const m = parseNpy(readBytes(labels, 'NPY file'), labels);
    if (m.shape.length !== 3 || m.shape[0] !== ds.n) throw new Error(`${labels}: masks must have shape [${ds.n}, H, W] for the ${ds.n} images of ${dataName}, got [${m.shape.join(', ')}]`);
    [, H, W] = m.shape as [number, number, number];
    values = m.values;
  }
  const out = model.outputs.find((v) => v.name === logits)!;
  const fixed = out.shape?.slice(1).every((d) => typeof d === 'number' && d > 0);
  const [classes, ...size] = (fixed ? out.shape!.slice(1) as number[] : (await model.run({ [input]: batchOf(ds, [0]).x }, { outputs: [logits] }))[logits]!.dims.slice(1)) as [number, ...number[]];
  if (size[0] !== H || size[1] !== W) throw new Error(`${labels}: masks are ${H}×${W}, and the model's logits are ${size.join('×')}; give masks at the logits' size`);
  const per = H * W;
  const masks = new Float64Array(values.length);
  for (let i = 0; i < masks.length; i++) {
    const v = Number(values[i]);
    if (v !== ignore && !(Number.isInteger(v) && v >= 0 && v < classes)) {
      throw new Error(`${labels}: pixel ${i % per} of mask ${Math.floor(i / per)} is ${v}, not a class in [0, ${classes}) nor the ignore index ${ignore}`);
    }
    masks[i] = v;
  }
  return { masks, H, W, classes, ignore, format: folder ? 'png' : 'npy' };
}

export async function segmentTask(model: RefitModel, o: SegmentOptions, what = 'refit train'): Promise<TrainTask> {
  const io = modelIO(model, o.logits, o);
  const out = model.outputs.find((v) => v.name === io.logits)!;
  if (out.shape && out.shape.length !== 4) throw new Error(`${what} --task segment needs [batch, classes, H, W] logits; output '${io.logits}' has shape ${JSON.stringify(out.shape)}`);
  if (!o.labels) throw new Error(`--task segment learns a class per pixel: give the masks with --labels <file or folder> (a .npy of integers [N, H, W], or a folder of PNG masks)`);
  const ds = await loadData(o.data, io, {});
  const { masks, H, W, classes, ignore, format } = await segmentMasks(model, io.spec.input, io.logits, ds, o.labels, o.data, o.ignoreIndex);
  const per = H * W;
  const labelsOf = (idx: readonly number[]) => i64([idx.length, H, W], idx.flatMap((s) => Array.from(masks.subarray(s * per, (s + 1) * per))));
  /**
   * Loss sum (nats), correct and labelled pixels of logits [b, C, H, W] against the masks of `idx`;
   * with `confusion` ([true · C + predicted] counts), the pixels added to it.
   */
  const tally = (z: Tensor, idx: readonly number[], confusion?: Float64Array) => {
    const C = z.dims[1]!;
    const x = z.data as Float32Array;
    let lossSum = 0, correct = 0, scored = 0;
    idx.forEach((s, k) => {
      for (let p = 0; p < per; p++) {
        const y = masks[s * per + p]!;
        if (y === ignore) continue;
        const { arg, best, sum } = pixelTop(x, k, C, per, p);
        lossSum += best + Math.log(sum) - x[(k * C + y) * per + p]!;
        if (arg === y) correct++;
        if (confusion) confusion[y * C + arg]!++;
        scored++;
      }
    });
    return { lossSum, correct, scored };
  };
  const input = (idx: number[]) => ({ [io.spec.input]: batchOf(ds, idx).x });
  return {
    data: { source: `${o.data} + ${o.labels}`, format: `${ds.format} images, ${format} masks`, samples: ds.n, sampleShape: ds.sampleShape },
    logits: io.logits,
    loss: crossEntropy({ logits: io.logits, labels: 'refit_labels', ignoreIndex: ignore }),
    feeds: (idx) => ({ ...input(idx), refit_labels: labelsOf(idx) }),
    score(z, idx) {
      const r = tally(z, idx);
      return { correct: r.correct, scored: r.scored };
    },
    async evaluate(model2, idx, bs, onBatch) {
      let lossSum = 0, correct = 0, scored = 0;
      const confusion = new Float64Array(classes * classes);
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const r = tally((await model2.run(input(part), { outputs: [io.logits] }))[io.logits]!, part, confusion);
        lossSum += r.lossSum; correct += r.correct; scored += r.scored;
        onBatch?.(Math.min(s + bs, idx.length));
      }
      return { loss: lossSum / Math.max(1, scored), accuracy: correct / Math.max(1, scored), meanIoU: meanIoU(confusion, classes) };
    },
  };
}

/**
 * Mean intersection over union over the classes present in the labels or the predictions
 * (`confusion[true · C + predicted]`): the standard segmentation score (a class neither labelled
 * nor predicted is left out, as torchmetrics' and mmseg's nan-mean leave it).
 */
export function meanIoU(confusion: Float64Array, C: number): number {
  let sum = 0, present = 0;
  for (let c = 0; c < C; c++) {
    let row = 0, col = 0;
    for (let k = 0; k < C; k++) { row += confusion[c * C + k]!; col += confusion[k * C + c]!; }
    const union = row + col - confusion[c * C + c]!;
    if (union === 0) continue;
    sum += confusion[c * C + c]! / union;
    present++;
  }
  return present ? sum / present : NaN;
}
