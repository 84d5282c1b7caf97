// The steps bench/web-bench.ts times, written against refit's public API only so the same code
// runs in Node (src/index.ts) and in the page (refit/web): the cases of test/web/cases.ts
// (cnn/vit × full/lora) plus the CNN's Tent step, and the weights the tfjs ViT needs.
import type * as Web from '../../src/web.ts';
import { prepare, batchOf, type CaseSpec } from '../../test/web/cases.ts';
import type { Weight } from './tfjs-vit.ts';

export type Refit = Pick<typeof Web, 'loadModel' | 'peft' | 'losses' | 'f32' | 'i64' | 'Rng'>;

export interface BenchSpec { model: 'cnn' | 'vit'; adapter: 'full' | 'lora' | 'tent'; batch: number; seed: number }

export const specName = (s: BenchSpec) => `${s.model}-${s.adapter}-b${s.batch}`;

/**
 * Tent (as refit.tta.Tent compiles it): every normalisation layer's scale and shift trains on the
 * softmax entropy of the logits, BatchNorm in train mode, logits an output; the batch is x alone.
 */
export async function prepareBench(refit: Refit, bytes: Uint8Array, s: BenchSpec, session: Web.SessionOptions = {}) {
  if (s.adapter !== 'tent') {
    const { model, step } = await prepare(refit, bytes, s as CaseSpec, undefined, session);
    return { model, step, batch: batchOf(refit, s as CaseSpec) as Record<string, Web.Tensor> };
  }
  const model = await refit.loadModel(bytes, session);
  const trainable = model.parameterNames().filter((n) => /(^|\.)(bn|norm)[^.]*\.(weight|bias)$/.test(n));
  if (!trainable.length) throw new Error(`prepareBench: no normalisation parameters in ${s.model} (names: ${model.parameterNames().slice(0, 8).join(', ')} …)`);
  const step = model.compileTrainStep({ trainable, loss: refit.losses.softmaxEntropy({ logits: 'logits' }), outputs: ['logits'], batchNorm: 'train' });
  return { model, step, batch: { x: batchOf(refit, { ...s, adapter: 'full' } as CaseSpec).x } as Record<string, Web.Tensor> };
}

/** The model's parameters and (for a LoRA case) the adapter's factors, for tfjsVit. */
export function vitWeights(model: Web.RefitModel, adapter: 'full' | 'lora') {
  const w = (t: Web.Tensor): Weight => ({ dims: [...t.dims] as number[], data: t.data as Float32Array });
  const weights = new Map<string, Weight>();
  const lora = new Map<string, { A: Weight; B: Weight }>();
  let loraScale = 1;
  for (const name of model.parameterNames()) {
    const m = /^web\.lora_([AB])\.(.+)$/.exec(name);
    if (!m) { if (!name.startsWith('web.')) weights.set(name, w(model.param(name))); continue; }
    const e = lora.get(m[2]!) ?? ({} as { A: Weight; B: Weight });
    e[m[1] as 'A' | 'B'] = w(model.param(name));
    lora.set(m[2]!, e);
  }
  if (adapter === 'lora') {
    // test/web/cases.ts: rank 4, alpha 8; peft.lora multiplies by gate · alpha/rank.
    const gate = model.parameterNames().includes('web.gate') ? (model.param('web.gate').data as Float32Array)[0]! : 1;
    loraScale = gate * 8 / 4;
  }
  return { weights, lora, loraScale };
}
