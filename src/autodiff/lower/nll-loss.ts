// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 12+; what torch.onnx writes for
// F.nll_loss and F.cross_entropy when a model is exported with its loss) written as ops with
// gradient rules, as the ONNX spec's function bodies define them:
//   logp  = input (NLL) or LogSoftmax(scores, axis 1) (SCE; its optional second output)
//   t     = target where target ≠ ignore_index, else 0 (any index, so the gather stays in range)
//   w     = weight[t] (1 without weights) · (target ≠ ignore_index)
//   loss  = −logp[n, t[n, d…], d…] · w          reduction 'none'
//           Σ loss                               'sum'
//           Σ loss / Σ w                         'mean' (the default)
// The gradient reaches logp through GatherElements (a scatter) and the weights through Gather.
// Checked against the ONNX backend node tests (test/real/onnx-backend-node.test.ts).
import type { Node } from '../../onnx/ir.ts';
import { attrInt, attrString, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { i64 } from '../../onnx/tensor.ts';
import { bind, present, refuse } from './util.ts';

const OPS = new Set(['NegativeLogLikelihoodLoss', 'SoftmaxCrossEntropyLoss']);
const INT64 = 7, FLOAT = 1;

export const isNllLoss = (node: Node) => isDefaultDomain(node) && OPS.has(node.opType);

export function nllLossRefusal(node: Node): string | undefined {
  const reduction = attrString(node, 'reduction', 'mean');
  if (!['none', 'sum', 'mean'].includes(reduction)) return `reduction '${reduction}' is not one of none, sum, mean`;
  return undefined;
}

export function lowerNllLoss(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const why = nllLossRefusal(node);
  if (why) refuse(node, why);
  const [input, target, weight] = node.inputs as [string, string, string | undefined];
  const rank = shapeOf(input).length;
  if (rank < 2) refuse(node, `input of rank ${rank}: the classes are axis 1 of [N, C, d…]`);
  const logp = node.opType === 'SoftmaxCrossEntropyLoss' ? em.op('LogSoftmax', [input], { axis: 1 }) : input;
  if (node.opType === 'SoftmaxCrossEntropyLoss' && node.outputs[1]) bind(em, logp, node.outputs[1]);
  const t = em.op('Cast', [target], { to: INT64 });
  const ignore = attrInt(node, 'ignore_index');
  const kept = ignore === undefined ? undefined : em.op('Not', [em.op('Equal', [t, em.constant(i64([], [ignore]), 'ignore_index')])]);
  const index = kept ? em.op('Where', [kept, t, em.constant(i64([], [0]), 'zero_index')]) : t;
  const picked = em.squeeze(em.op('GatherElements', [logp, em.unsqueeze(index, [1])], { axis: 1 }), [1]);
  let w = weight && present(node, 2) ? em.op('Gather', [weight, index], { axis: 0 }) : undefined;
  if (kept) {
    const k = em.op('Cast', [kept], { to: FLOAT });
    w = w ? em.mul(w, k) : k;
  }
  const loss = em.neg(w ? em.mul(picked, w) : picked);
  const axes = Array.from({ length: rank - 1 }, (_, i) => i);
  const reduction = attrString(node, 'reduction', 'mean');
  const out = reduction === 'none' ? loss
    : reduction === 'sum' ? em.reduce('ReduceSum', loss, axes, false)
    : w ? em.div(em.reduce('ReduceSum', loss, axes, false), em.reduce('ReduceSum', w, axes, false))
    : em.reduce('ReduceMean', loss, axes, false);
  bind(em, out, node.outputs[0]!);
}
