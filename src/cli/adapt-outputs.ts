// `refit adapt yolov8n.onnx --method bn-adapt --stream frames/ --out adapted.npy`: test-time
// adaptation of a model whose output is neither one class per sample nor one per pixel (a
// detector's [N, 4 + classes, anchors], a regressor's values, a recogniser's frame logits). Only
// the methods whose objective never reads the output run here (source; bn-adapt: the normalization
// statistics of the batch, the usual first step for a detector on a new camera; actmad: every
// parameter stepped so that BatchNorm outputs match their statistics on --source); what comes out is the adapted
// model's output for every sample, as one float32 .npy [samples, ...output dims], for the
// caller's own decoding (non-maximum suppression, thresholds), streamed batch by batch into a
// temporary that replaces --out only at the end.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { RefitModel } from '../model.ts';
import { createAdapter } from '../tta/index.ts';
import { formatShape } from '../onnx/tensor.ts';
import { loadData, batchOf, progressBar, range, type ModelIO } from './common.ts';
import { npyHeader, bytesOf } from './data-files.ts';
import { AtomicFileWriter } from '../onnx/io.ts';

/** Methods that adapt without reading the output, so without knowing what it means (ActMAD matches inner activations to --source's). */
export const OUTPUT_METHODS = ['source', 'bn-adapt', 'actmad'] as const;

export async function adaptOutputs(model: RefitModel, io: ModelIO, o: { method: string; stream: string; out: string; batchSize: number; json?: boolean; methodOptions: Record<string, unknown> }): Promise<{ samples: number; batches: number; ms: number; format: string; source: string; shape: number[] }> {
  const dims = model.outputs.find((v) => v.name === io.logits)?.shape ?? [];
  const what = `'${io.logits}' is ${formatShape(dims)}, neither [batch, classes] nor a segmenter's [batch, classes, H, W]`;
  if (!(OUTPUT_METHODS as readonly string[]).includes(o.method)) throw new Error(`--method ${o.method} needs class scores, and the output ${what} (a detector's or a recogniser's per-position output?). On such a model refit adapt runs ${OUTPUT_METHODS.join(', ')} and writes the adapted outputs to an .npy file; name an [batch, classes] output with --logits, or train a loss of your own from the library`);
  if (!o.out.toLowerCase().endsWith('.npy')) throw new Error(`--out ${o.out}: the output ${what}, so refit adapt writes the adapted outputs themselves, as float32 .npy [samples, ...]; give a path ending in .npy`);
  const ds = await loadData(o.stream, io, {});
  const adapter = createAdapter(model, o.method, { logits: io.logits, ...o.methodOptions });
  const batches = Math.ceil(ds.n / o.batchSize);
  const bar = progressBar(!o.json, 'batches');
  bar?.start(batches, 0, { label: o.method, metrics: '' });
  // Streamed into a temporary beside --out, which replaces it only when every batch is written:
  // a detector's outputs (YOLO at 640: 2.8 MB a frame) need not fit in memory.
  mkdirSync(dirname(resolve(o.out)), { recursive: true });
  const file = new AtomicFileWriter(o.out);
  let per: number[] | undefined, ms = 0;
  try {
    for (let k = 0; k < batches; k++) {
      const idx = range(k * o.batchSize, Math.min((k + 1) * o.batchSize, ds.n));
      const t = performance.now();
      const r = await adapter.predict(batchOf(ds, idx).x);
      ms += performance.now() - t;
      const rest = r.logits.dims.slice(1);
      // Dynamic output dims (anchors follow the image size) must agree across batches to stack.
      if (per && rest.join() !== per.join()) throw new Error(`the output '${io.logits}' is ${formatShape(r.logits.dims)} on batch ${k} and [*, ${per.join(', ')}] before: samples of one size stack into one .npy; give images of one size`);
      if (!per) file.write(npyHeader('<f4', [ds.n, ...rest])); // every dim is known now
      per = rest;
      file.write(bytesOf(r.logits.data as Float32Array));
      bar?.update(k + 1, { metrics: '' });
    }
    file.commit();
  } catch (e) {
    file.abort();
    throw e;
  } finally {
    bar?.stop();
    await adapter.release();
  }
  return { samples: ds.n, batches, ms: ms / Math.max(1, batches), format: ds.format, source: ds.source, shape: [ds.n, ...(per ?? [])] };
}
