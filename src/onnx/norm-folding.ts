// The one message for "this model has no normalization layer", shared by norm-affine (PEFT), every
// TTA method that adapts norm layers (Tent, EATA, SAR, CoTTA, RMT, RoTTA, ROID) and BN-adapt.
//
// Why a helper: the usual reason a CNN has no BatchNorm is that something folded it into the
// convolutions before refit saw the file, and the fix is upstream of refit. Two common folders:
// - onnxruntime's graph optimizations (ConvBNFusion runs at level 'basic' and above, so also at
//   'extended' and at 'all', its default): a model saved through `optimizedModelFilePath` has no
//   BatchNormalization left. Recognised by what onnxruntime writes into every model it saves: an
//   opset import for its internal domains (com.microsoft.nchwc, ai.onnx.training, …; checked
//   with onnxruntime-node at levels 'disabled' to 'all'), and blocked nchwc convs at 'all';
// - torch.onnx.export's default, training=TrainingMode.EVAL, which fuses BatchNorm into the
//   preceding conv (checked with torch 1.13); TrainingMode.PRESERVE on an eval() model keeps it.
// Folding always leaves the conv with a bias, so the hint is given only when a conv has one: a
// network that never had BatchNorm often has biases too, so the torch and unknown-producer hints
// say "if the network had BatchNorm"; the onnxruntime one states what onnxruntime does.
import type { Model } from './ir.ts';
import { NCHWC_DOMAIN } from './nchwc.ts';

/** Opset domains no exporter declares but onnxruntime writes into every model it saves. */
const ORT_SAVED_DOMAINS = new Set([NCHWC_DOMAIN, 'ai.onnx.training', 'ai.onnx.preview.training', 'com.microsoft.experimental']);

/** Convs that folding could have given a bias: standard, onnxruntime's FusedConv and its blocked nchwc Conv. */
const isConv = (domain: string, op: string) => op === 'Conv' || (op === 'FusedConv' && domain === 'com.microsoft');

export type ModelHeader = Pick<Model, 'graph'> & Partial<Pick<Model, 'opsets' | 'producerName'>>;

/** Where the model came from, as far as folding is concerned. */
export function normFoldingEvidence(model: ModelHeader): { savedByOnnxruntime: boolean; blocked: boolean; producer: string; biasedConvs: number } {
  const nodes = model.graph.nodes;
  const blocked = nodes.some((n) => n.domain === NCHWC_DOMAIN);
  const savedByOnnxruntime = blocked || (model.opsets ?? []).some((o) => ORT_SAVED_DOMAINS.has(o.domain));
  const biasedConvs = nodes.filter((n) => isConv(n.domain, n.opType) && !!n.inputs[2]).length;
  return { savedByOnnxruntime, blocked, producer: model.producerName ?? '', biasedConvs };
}

/** A sentence on why the norm layers are likely missing, or '' when nothing points to folding. */
export function foldedNormHint(model: ModelHeader): string {
  const e = normFoldingEvidence(model);
  if (e.biasedConvs === 0) return '';
  const convs = `${e.biasedConvs} convolution${e.biasedConvs === 1 ? ' has' : 's have'} a bias`;
  if (e.savedByOnnxruntime) {
    return `This model was saved by onnxruntime (it declares onnxruntime's internal opsets${e.blocked ? ' and holds its blocked com.microsoft.nchwc convolutions' : ''}) and ${convs}: ` +
      'onnxruntime\'s graph optimizations (level \'basic\' and above, so also \'extended\' and \'all\', its default) fold BatchNormalization into the convolution before it, so any BatchNorm layers the network had are gone. ' +
      'Export the model again (torch.onnx.export with training=torch.onnx.TrainingMode.PRESERVE keeps BatchNorm) and load that file, not the one onnxruntime saved (optimizedModelFilePath).';
  }
  if (/pytorch/i.test(e.producer)) {
    return `This model was exported by PyTorch and ${convs}: torch.onnx.export's default (training=TrainingMode.EVAL) folds BatchNorm into the convolutions. ` +
      'If the network has BatchNorm, export it again with training=torch.onnx.TrainingMode.PRESERVE (on the eval() model).';
  }
  return `${convs[0]!.toUpperCase()}${convs.slice(1)}: if the network had BatchNorm, the exporter or an optimizer folded it into the convolutions ` +
    '(torch.onnx.export\'s default training=TrainingMode.EVAL, onnxruntime\'s graph optimizations, onnxoptimizer\'s fuse_bn_into_conv); export it again without that step.';
}

/** The normalization layers refit recognises (src/onnx/norm-layers.ts), for the lead sentence. */
export const NORM_KINDS = 'BatchNormalization, LayerNormalization, GroupNormalization or InstanceNormalization, fused or as the primitive ops exporters write below opset 17, or RMSNorm as primitive ops';

/**
 * `lead` (what needs norm layers, and that this model has none), then the likely reason when a
 * sign points to folding, then `instead`: what the caller's user can do.
 */
export function noNormLayerMessage(lead: string, model: ModelHeader, instead: string): string {
  const hint = foldedNormHint(model);
  return hint ? `${lead} ${hint} Otherwise, ${instead}` : `${lead} ${instead[0]!.toUpperCase()}${instead.slice(1)}`;
}
