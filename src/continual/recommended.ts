// The controller options `refit demo` and `refit adapt --method continual` run with: those the
// validation streams chose for the shipped CNN (bench/results/continual-tuned-cnn.json, `chosen`).
// On a torchvision ResNet-18 trained elsewhere (bench/train_foreign_fmnist.py) they beat the
// library's defaults on that model's validation and test streams too (docs/continual.md,
// "A model refit did not build"), so they are what a command-line user gets.
import type { Tensor } from '../onnx/tensor.ts';
import type { InputStats } from '../tta/input-align.ts';
import type { ControllerOptions } from './controller.ts';
import type { RefitModel } from '../model.ts';
import { normLayers } from '../tta/common.ts';
import { countParameters } from '../nn/summary.ts';

/**
 * Above this many trainable parameters the deep learner adapts the normalization layers' scales
 * and shifts only (`deep.params: 'norm'`), when the model has them. Why (docs/continual.md,
 * "The deep learner's parameters on large models"): on torchvision's ResNet-18 (11.2M parameters)
 * 'norm' gave 16.62 % against 16.80 % for every parameter on its validation stream, clean error
 * after the stream 9.8 % against 12.0 %, at 411 against 1520 ms per level-3 batch. On the shipped
 * CNN (0.31M) and ViT (0.46M) validation streams RMT over every parameter beat RMT over the
 * normalization parameters (19.35 against 21.03 %, 34.56 against 35.10; session 5).
 */
export const DEEP_NORM_ABOVE = 1_000_000;

/** What the recommended deep learner adapts on `model`: 'norm' on large models with normalization layers, else 'all'. */
export function recommendedDeepParams(model: RefitModel, above = DEEP_NORM_ABOVE): 'all' | 'norm' {
  const affine = normLayers(model).some((l) => l.scale || l.bias);
  return countParameters(model.ir) > above && affine ? 'norm' : 'all';
}

export interface RecommendedInputs {
  logits: string;
  /** An [N, D] output (penultimate features): the error memory's and, before level 3, LAME's. */
  embedding?: string;
  /** Labelled in-distribution images: level 3 is then the deep learner (RMT). */
  source?: { images: Tensor; labels: ArrayLike<number> };
  /** What the deep learner adapts (recommendedDeepParams). @default 'all' */
  deepParams?: 'all' | 'norm';
  /** Input alignment's statistics (tta.inputStats of the in-distribution images and labels). */
  inputAlign?: InputStats;
}

export function recommendedControllerOptions(o: RecommendedInputs): ControllerOptions {
  const params = o.deepParams === 'norm' ? { params: 'norm' as const } : {};
  const deep = o.source ? { deep: { sourceData: o.source.images, sourceLabels: o.source.labels, embedding: true, ...params } } : {};
  // LAME acts on label-concentrated batches and needs features (the embedding; at level 3 the deep
  // learner's). Its threshold compares the batch-size-corrected spread (0.95 raw at batch 64).
  const lame = o.embedding ? { lame: 'auto' as const, lameThreshold: 0.9805 } : {};
  return {
    logits: o.logits,
    ...(o.embedding ? { embedding: o.embedding } : {}),
    lr: 0.001,
    priorCorrection: 'batch',
    debias: { similarity: 0.98 },
    ...lame,
    ...(o.inputAlign ? { inputAlign: o.inputAlign } : {}),
    ...deep,
  };
}
