// The shipped ViT (src/nn/models.ts `vit`: patch 7, dim 96, depth 6, 4 heads, MLP 192, pre-LN,
// mean over tokens, linear head) written in TensorFlow.js ops, on the weights of
// models/fmnist-vit.onnx, for bench/web-bench.ts's tfjs-wasm baseline. LoRA as refit's
// peft.lora adds it (y = x·W + b + scale · (x·Aᵀ)·Bᵀ on attn.q and attn.v); the step is
// tf.variableGrads of the mean cross-entropy, as refit's step returns loss and gradients.
//
// The patch embedding (a 7×7 convolution of stride 7) is written as a patchify + MatMul, the
// same product: tfjs-backend-wasm has no convolution backward, and this way full fine-tuning
// (which trains patch_embed.weight) runs too.
import type * as TF from '@tensorflow/tfjs-core';

export interface Weight { dims: readonly number[]; data: Float32Array }

export interface TfjsVitOptions {
  /** What trains: the LoRA factors (lora) or every parameter (all). */
  train: 'lora' | 'all';
  /** LoRA factors by target layer (e.g. 'blocks.0.attn.q'), A [r, in], B [out, r]. */
  lora?: Map<string, { A: Weight; B: Weight }>;
  /** LoRA's output scale (alpha / rank × gate). */
  loraScale?: number;
}

const EPS = 1e-5, HEADS = 4, DIM = 96, TOKENS = 16, PATCH = 7, DEPTH = 6;

export function tfjsVit(tf: typeof TF, weights: Map<string, Weight>, o: TfjsVitOptions) {
  const vars: TF.Variable[] = [];
  const t = (name: string, w: Weight, dims: number[] = [...w.dims]) => {
    const x = tf.tensor(w.data, dims, 'float32');
    if (o.train === 'all') { const v = tf.variable(x, true, name); x.dispose(); vars.push(v); return v as TF.Tensor; }
    return tf.keep(x);
  };
  const W = new Map<string, TF.Tensor>();
  for (const [name, w] of weights) W.set(name, name === 'patch_embed.weight' ? t(name, w, [DIM, PATCH * PATCH]) : t(name, w));
  const lora = new Map<string, { A: TF.Tensor; B: TF.Tensor }>();
  for (const [layer, f] of o.lora ?? []) {
    const mk = (k: string, w: Weight) => { const v = tf.variable(tf.tensor(w.data, [...w.dims], 'float32'), o.train === 'lora', `${layer}.${k}`); if (o.train === 'lora') vars.push(v); return v as TF.Tensor; };
    lora.set(layer, { A: mk('lora_A', f.A), B: mk('lora_B', f.B) });
  }
  const scale = o.loraScale ?? 1;
  const get = (n: string) => { const v = W.get(n); if (!v) throw new Error(`tfjsVit: weight ${n} missing from the model`); return v; };

  const linear = (x: TF.Tensor2D, name: string): TF.Tensor2D => {
    let y = tf.add(tf.matMul(x, get(`${name}.weight`) as TF.Tensor2D), get(`${name}.bias`)) as TF.Tensor2D;
    const l = lora.get(name);
    if (l) y = tf.add(y, tf.mul(tf.matMul(tf.matMul(x, l.A as TF.Tensor2D, false, true), l.B as TF.Tensor2D, false, true), scale));
    return y;
  };
  const layerNorm = (x: TF.Tensor2D, name: string): TF.Tensor2D => {
    const d = tf.sub(x, tf.mean(x, -1, true));
    const v = tf.mean(tf.square(d), -1, true);
    return tf.add(tf.mul(tf.mul(d, tf.rsqrt(tf.add(v, EPS))), get(`${name}.weight`)), get(`${name}.bias`)) as TF.Tensor2D;
  };
  const heads = (x: TF.Tensor2D, n: number) => tf.transpose(tf.reshape(x, [n, TOKENS, HEADS, DIM / HEADS]), [0, 2, 1, 3]);

  /** logits [N, 10] of images x [N, 1, 28, 28]. */
  const forward = (x: TF.Tensor): TF.Tensor2D => {
    const n = x.shape[0]!;
    // [N,1,28,28] → [N,4,7,4,7] → [N,4,4,7,7]: token i·4+j holds patch (i, j), features r·7+c as the conv weight flattens.
    const patches = tf.reshape(tf.transpose(tf.reshape(x, [n, 4, PATCH, 4, PATCH]), [0, 1, 3, 2, 4]), [n * TOKENS, PATCH * PATCH]);
    let h = tf.add(tf.matMul(patches, get('patch_embed.weight') as TF.Tensor2D, false, true), get('patch_embed.bias')) as TF.Tensor2D;
    h = tf.reshape(tf.add(tf.reshape(h, [n, TOKENS, DIM]), get('pos_embed')), [n * TOKENS, DIM]);
    for (let i = 0; i < DEPTH; i++) {
      const b = `blocks.${i}`;
      const a = layerNorm(h, `${b}.norm1`);
      const q = heads(linear(a, `${b}.attn.q`), n), k = heads(linear(a, `${b}.attn.k`), n), v = heads(linear(a, `${b}.attn.v`), n);
      const p = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(DIM / HEADS)));
      const o2 = tf.reshape(tf.transpose(tf.matMul(p, v), [0, 2, 1, 3]), [n * TOKENS, DIM]) as TF.Tensor2D;
      h = tf.add(h, linear(o2, `${b}.attn.out`));
      const f = linear(layerNorm(h, `${b}.norm2`), `${b}.mlp.fc1`);
      const g = tf.mul(tf.mul(f, 0.5), tf.add(tf.erf(tf.div(f, Math.SQRT2)), 1)) as TF.Tensor2D;   // exact GELU, as the ONNX graph
      h = tf.add(h, linear(g, `${b}.mlp.fc2`));
    }
    const feats = tf.mean(tf.reshape(layerNorm(h, 'norm'), [n, TOKENS, DIM]), 1) as TF.Tensor2D;
    return linear(feats, 'head');
  };
  /** Mean cross-entropy of logits against integer labels. */
  const loss = (x: TF.Tensor, y: TF.Tensor1D) => tf.neg(tf.mean(tf.sum(tf.mul(tf.oneHot(y, 10), tf.logSoftmax(forward(x))), -1))) as TF.Scalar;
  /** One step: loss and the gradient of every trained variable, read back to JS like refit's step. */
  const step = async (x: TF.Tensor, y: TF.Tensor1D) => {
    const { value, grads } = tf.variableGrads(() => loss(x, y), vars);
    const out = { loss: (await value.data())[0]!, grads: await Promise.all(Object.values(grads).map((g) => g.data())) };
    value.dispose();
    for (const g of Object.values(grads)) g.dispose();
    return out;
  };
  const dispose = () => { for (const v of W.values()) v.dispose(); for (const l of lora.values()) { l.A.dispose(); l.B.dispose(); } };
  return { forward, loss, step, vars, dispose };
}
