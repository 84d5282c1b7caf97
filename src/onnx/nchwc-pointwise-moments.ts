// The batch moments of a 1×1 convolution's output from its input, on the blocked layout.
//
// Why: a 1×1 stride-1 conv y = W·x + B is linear per position, so mean_y = W·mean_x + B and
// var_y = diag(W Σ_x Wᵀ), with Σ_x from one Gram MatMul of the (narrower) input. Where that costs
// less than passes over the wide output (nchwc-batchstats.ts pointwiseStatsPay: MobileNet-style
// expansions), BN-adapt folds the BN into the conv and never reads the output for its statistics,
// and the blocked Tent-style step (nchwc-step.ts) reads it only for the gradient. The input is
// shifted by its first sample's mean before the Gram product (Σ = G/n − μμᵀ of the shifted data),
// so that a large common mean cancels in the rows, not in G.
import { blockedChannelSums } from './nchwc.ts';
import type { Emitter } from './emitter.ts';

/**
 * Mean and biased variance [Op] of W·x + B over N, H, W, and the mean [Ip] of x, for `xb` blocked
 * [N, Ip, H, W] (`dims`, Ip whole blocks of `block`), `w2` the weight as [Op, Ip] (pad rows and
 * columns zero) and `bias` [Op] or undefined.
 */
export function pointwiseMoments(em: Emitter, xb: string, [N, I, H, W]: number[], w2: string, O: number, bias: string | undefined, block: number): { mean: string; variance: string; meanX: string } {
  const count = N! * H! * W!;
  const K = em.reshape(em.reduce('ReduceMean', em.reshape(em.op('Slice', [xb, em.ints([0]), em.ints([1]), em.ints([0])]), [I! / block, H! * W!, block]), [1], false), [I!]);
  // NHWC rows [N·H·W, I] of the blocked input (one block: the blocked layout already is), minus K.
  const nhwc = I === block ? em.reshape(xb, [count, I!]) : em.reshape(em.transpose(em.reshape(xb, [N!, I! / block, H! * W!, block]), [0, 2, 1, 3]), [count, I!]);
  const rows = em.sub(nhwc, K);
  // mean(x) − K from the blocked input's sums (the fast keep-reduce-keep reduction; a column sum
  // of the [N·H·W, I] rows took onnxruntime 9.6 ms on MobileNetV2's first expansion, 16 columns).
  const mu = em.sub(em.mul(blockedChannelSums(em, xb, [N!, I!, H!, W!], block), em.scalar(1 / count)), K);
  const gram = em.mul(em.op('MatMul', [em.transpose(rows, [1, 0]), rows]), em.scalar(1 / count));
  const sigma = em.sub(gram, em.mul(em.reshape(mu, [I!, 1]), em.reshape(mu, [1, I!])));
  const meanX = em.add(K, mu);
  let mean = em.reshape(em.op('MatMul', [w2, em.reshape(meanX, [I!, 1])]), [O]);
  if (bias) mean = em.add(mean, bias);
  const variance = em.op('Relu', [em.reduce('ReduceSum', em.mul(em.op('MatMul', [w2, sigma]), w2), [1], false)]);
  return { mean, variance, meanX };
}
