// Teachers for cloud consolidation (CEMA: a larger model in the cloud labels what devices upload).
// A teacher maps a batch of uploaded samples to class probabilities. Three kinds, chosen by
// validation error on shifted Fashion-MNIST-C (bench/fleet-consolidate.ts, docs/fleet.md):
// - a model run as is (the shipped ViT: LayerNorm, nothing to adapt);
// - a BatchNorm model whose statistics are those of the uploads it labels (BN-adapt on the whole
//   upload set at once, not the device's small batches), optionally averaging its softmax over
//   augmented copies (CoTTA's augmentations, src/tta/augment.ts);
// - an ensemble: the weighted mean of other teachers' probabilities.
import type { RefitModel } from '../model.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';
import { batchStatModel } from '../tta/bn-adapt.ts';
import { hasBatchNormLayers, softmaxRows } from '../tta/common.ts';
import { defaultLogits } from '../tta/types.ts';
import { augmentBatch } from '../tta/augment.ts';
import { Rng } from '../util/rng.ts';

export interface Teacher {
  readonly name: string;
  /** Class probabilities [n, C] (row-major) for the batch x [n, ...]. */
  probs(x: Tensor): Promise<Float32Array>;
  release(): Promise<void>;
}

export interface ModelTeacherOptions {
  /** Normalise BatchNorm layers with the statistics of the batch being labelled. @default true when the model has BatchNorm */
  bnAdapt?: boolean;
  /** Augmented copies averaged with the plain prediction (0: none). @default 0 */
  augment?: number;
  /** Seed of the augmentations. @default 0 */
  seed?: number;
  /** Largest batch run at once; BN statistics then come from each chunk. @default 1024 */
  maxBatch?: number;
  name?: string;
  /** release() also releases the model (a teacher that loaded its own). @default false */
  own?: boolean;
}

/** A model (the ViT, or the device's own CNN with upload statistics) as a teacher. */
export function modelTeacher(model: RefitModel, o: ModelTeacherOptions = {}): Teacher {
  const bn = (o.bnAdapt ?? true) && hasBatchNormLayers(model);
  const logits = defaultLogits(model.outputs);
  const input = model.inputs[0]!.name;
  const augment = o.augment ?? 0;
  if (!Number.isInteger(augment) || augment < 0) throw new Error(`modelTeacher: augment must be a non-negative integer, got ${augment}`);
  const maxBatch = o.maxBatch ?? 1024;
  const variants: RefitModel[] = [];
  const runOnce = async (x: Tensor): Promise<Float32Array> => {
    const feeds = { [input]: x };
    if (!bn) return (await model.run(feeds, { outputs: [logits] }))[logits]!.data as Float32Array;
    // One variant per batch shape; uploads come in few shapes, and release() frees them all.
    const v = await batchStatModel(model, feeds, 0);
    variants.push(v);
    const out = (await v.run(feeds, { outputs: [logits] }))[logits]!.data as Float32Array;
    await v.release();
    variants.pop();
    return out;
  };
  return {
    name: o.name ?? `${bn ? 'bn-adapted ' : ''}model${augment ? ` +${augment} augmentations` : ''}`,
    async probs(x) {
      const n = x.dims[0]!, per = x.data.length / n;
      const out: Float32Array[] = [];
      for (let s = 0; s < n; s += maxBatch) {
        const m = Math.min(maxBatch, n - s);
        const chunk = f32([m, ...x.dims.slice(1)], (x.data as Float32Array).subarray(s * per, (s + m) * per));
        const l = await runOnce(chunk);
        const C = l.length / m;
        const p = Float64Array.from(softmaxRows(l, C));
        if (augment) {
          const rng = new Rng(o.seed ?? 0);
          for (let k = 0; k < augment; k++) {
            const xa = augmentBatch(chunk.data as Float32Array, chunk.dims, rng);
            const pa = softmaxRows(await runOnce(f32(chunk.dims.slice(), xa)), C);
            for (let i = 0; i < p.length; i++) p[i]! += pa[i]!;
          }
          for (let i = 0; i < p.length; i++) p[i]! /= augment + 1;
        }
        out.push(Float32Array.from(p));
      }
      return concat(out);
    },
    async release() {
      for (const v of variants.splice(0)) await v.release();
      if (o.own) await model.release();
    },
  };
}

/** The weighted mean of teachers' probabilities (equal weights by default). */
export function ensembleTeacher(members: Teacher[], weights?: number[]): Teacher {
  if (members.length === 0) throw new Error('ensembleTeacher: no members');
  const w = weights ?? members.map(() => 1);
  if (w.length !== members.length || w.some((v) => !(v >= 0)) || w.every((v) => v === 0)) {
    throw new Error(`ensembleTeacher: need one non-negative weight per member (${members.length}), not all zero; got [${w.join(', ')}]`);
  }
  const total = w.reduce((a, b) => a + b, 0);
  return {
    name: `ensemble(${members.map((m) => m.name).join(' + ')})`,
    async probs(x) {
      let acc: Float32Array | undefined;
      for (let k = 0; k < members.length; k++) {
        const p = await members[k]!.probs(x);
        if (!acc) acc = new Float32Array(p.length);
        if (p.length !== acc.length) throw new Error(`ensembleTeacher: '${members[k]!.name}' gave ${p.length} probabilities, '${members[0]!.name}' ${acc.length}`);
        for (let i = 0; i < p.length; i++) acc[i]! += (w[k]! / total) * p[i]!;
      }
      return acc!;
    },
    async release() {
      for (const m of members) await m.release();
    },
  };
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
