// `refit adapt segmenter.onnx --method tent --stream images/ [--labels masks/]`: test-time
// adaptation of a segmenter (logits [N, classes, H, W]) on a stream of images, in file order.
// Tent adapts on the mean entropy over pixels, as its paper's segmentation experiment; bn-adapt
// and source need no loss. Output: one row per image with its mean confidence (the top class's
// probability averaged over pixels) and, with masks (--labels, as for `refit train --task
// segment`), its pixel accuracy; the summary gives the pixel error of the adapted and of the
// unadapted model on the same batches.
import { extname } from 'node:path';
import type { RefitModel } from '../model.ts';
import { createAdapter } from '../tta/index.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { loadData, batchOf, progressBar, range, writeTextAtomic, csvCell, type ModelIO } from './common.ts';
import { segmentMasks, pixelTop, type Masks } from './segment-task.ts';

/** Methods that adapt a segmenter (ActMAD with --source: it never reads the logits): the others take [batch, classes] logits. */
export const DENSE_METHODS = ['source', 'bn-adapt', 'tent', 'actmad'] as const;

export interface DenseScores {
  /** Labelled pixels over the stream, and the share the adapted and the unadapted model got wrong. */
  pixels: number;
  error: number;
  sourceError: number;
}

/** Per image of logits [b, C, H, W]: mean top-class probability, and with masks, correct and labelled pixels. */
function perImage(z: Tensor, idx: readonly number[], m?: Masks): { confidence: number; correct: number; labelled: number }[] {
  const [b, C, H, W] = z.dims as [number, number, number, number];
  const x = z.data as Float32Array, per = H * W;
  return Array.from({ length: b }, (_, k) => {
    let conf = 0, correct = 0, labelled = 0;
    for (let p = 0; p < per; p++) {
      const { arg, sum } = pixelTop(x, k, C, per, p);
      conf += 1 / sum;
      const y = m?.masks[idx[k]! * per + p];
      if (y === undefined || y === m!.ignore) continue;
      labelled++;
      if (y === arg) correct++;
    }
    return { confidence: conf / per, correct, labelled };
  });
}

export async function adaptSegmenter(model: RefitModel, io: ModelIO, o: { method: string; stream: string; labels?: string; out: string; batchSize: number; json?: boolean; methodOptions: Record<string, unknown> }): Promise<{ samples: number; batches: number; scores: DenseScores | null; ms: number; format: string; source: string }> {
  if (!(DENSE_METHODS as readonly string[]).includes(o.method)) throw new Error(`--method ${o.method} adapts classifiers; a segmenter's dense logits [batch, classes, H, W] take ${DENSE_METHODS.join(', ')}`);
  const csv = extname(o.out).toLowerCase() === '.csv';
  const ds = await loadData(o.stream, io, {});
  const masks = o.labels ? await segmentMasks(model, io.spec.input, io.logits, ds, o.labels, o.stream) : undefined;
  const adapter = createAdapter(model, o.method, o.methodOptions);
  const batches = Math.ceil(ds.n / o.batchSize);
  const bar = progressBar(!o.json, 'batches');
  bar?.start(batches, 0, { label: o.method, metrics: '' });
  const lines: string[] = csv ? [['id', 'confidence', ...(masks ? ['pixel_accuracy'] : [])].join(',')] : [];
  let ms = 0, labelled = 0, wrong = 0, sourceWrong = 0;
  for (let k = 0; k < batches; k++) {
    const idx = range(k * o.batchSize, Math.min((k + 1) * o.batchSize, ds.n));
    const x = batchOf(ds, idx).x;
    const t = performance.now();
    const r = await adapter.predict(x);
    ms += performance.now() - t;
    const rows = perImage(r.logits, idx, masks);
    rows.forEach((s, i) => {
      const row = { id: ds.ids[idx[i]!]!, confidence: +s.confidence.toFixed(6), ...(masks ? { pixel_accuracy: s.labelled ? +(s.correct / s.labelled).toFixed(6) : null } : {}) };
      lines.push(csv ? Object.values(row).map((v) => (v === null ? '' : csvCell(String(v)))).join(',') : JSON.stringify(row));
      labelled += s.labelled;
      wrong += s.labelled - s.correct;
    });
    if (masks) {
      // the unadapted model on the same batch: the baseline the method has to beat
      const plain = perImage((await model.run({ [io.spec.input]: x }, { outputs: [io.logits] }))[io.logits]!, idx, masks);
      for (const s of plain) sourceWrong += s.labelled - s.correct;
    }
    bar?.update(k + 1, { metrics: masks ? `pixel error ${(100 * wrong / Math.max(1, labelled)).toFixed(1)}%` : '' });
  }
  bar?.stop();
  writeTextAtomic(o.out, lines.join('\n') + '\n');
  await adapter.release();
  return {
    samples: ds.n, batches, ms: ms / Math.max(1, batches), format: ds.format, source: ds.source,
    scores: masks ? { pixels: labelled, error: wrong / Math.max(1, labelled), sourceError: sourceWrong / Math.max(1, labelled) } : null,
  };
}
