// The controller options `refit demo` and `refit adapt --method continual` run with: those the
// validation streams chose for the shipped CNN (bench/results/continual-tuned-cnn.json, `chosen`).
// On a torchvision ResNet-18 trained elsewhere (bench/train_foreign_fmnist.py) they beat the
// library's defaults on that model's validation and test streams too (docs/continual.md,
// "A model refit did not build"), so they are what a command-line user gets.
import type { Tensor } from '../onnx/tensor.ts';
import type { InputStats } from '../tta/input-align.ts';
import type { ControllerOptions } from './controller.ts';

export interface RecommendedInputs {
  logits: string;
  /** An [N, D] output (penultimate features): the error memory's and, before level 3, LAME's. */
  embedding?: string;
  /** Labelled in-distribution images: level 3 is then the deep learner (RMT over every parameter). */
  source?: { images: Tensor; labels: ArrayLike<number> };
  /** Input alignment's statistics (tta.inputStats of the in-distribution images and labels). */
  inputAlign?: InputStats;
}

export function recommendedControllerOptions(o: RecommendedInputs): ControllerOptions {
  const deep = o.source ? { deep: { sourceData: o.source.images, sourceLabels: o.source.labels, embedding: true } } : {};
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
