// Tent (Wang et al., ICLR 2021, "Tent: Fully Test-time Adaptation by Entropy Minimization").
// Each batch: forward with BatchNorm on batch statistics, loss = mean Shannon entropy of the
// predictions, one SGD step on the normalization affine parameters; the prediction is the
// forward's output (before the update), as in the paper's code. Running statistics are never
// used or kept (the code sets track_running_stats = False). LayerNorm models adapt their LN
// affine parameters the same way (LN has no running statistics). A segmentation model's dense
// logits [batch, classes, H, W] are adapted on the mean entropy over pixels, as the paper's
// segmentation experiment (GTA → Cityscapes) minimises it. A speech recogniser's frame logits
// [batch, frames, classes] (`frames: true`) are adapted on the mean entropy over frames: not in
// Tent's paper, it is SUTA's entropy-minimisation term (Lin et al., 2022) without its other parts
// (minimum class confusion, temperature, single-utterance episodes).
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { softmaxEntropy } from '../train/losses.ts';
import type { TrainStep } from '../train/train-step.ts';
import { commonOptions, parseOptions, PaperSgdAdapter, normAffineParams, type AdaptOutcome } from './common.ts';

/** Paper defaults (ImageNet, batch 64): SGD, momentum 0.9, lr 0.00025 (scaled for other batch sizes as in SAR's main.py). */
export const TENT_DEFAULTS = { momentum: 0.9, lrAtBatch64: 0.00025, steps: 1 } as const;

export const tentSchema = z.object({
  ...commonOptions,
  /** SGD learning rate. Default: 0.00025 for batch ≥ 32, (0.00025/64)·2·batch below (BN/GN models); 0.001/64·batch for LayerNorm-only models. */
  lr: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).default(TENT_DEFAULTS.momentum),
  /** Parameters to adapt (default: every normalization layer's scale and bias). */
  params: z.array(z.string()).min(1).optional(),
  /**
   * The logits are a speech recogniser's [batch, frames, classes] (a CTC model): the entropy of each
   * frame, averaged over the frames. Not in Tent's paper, which adapts classifiers and segmenters;
   * it is the entropy-minimisation objective SUTA (Lin et al., 2022) applies to CTC frames.
   */
  frames: z.boolean().default(false),
});
export type TentOptions = z.input<typeof tentSchema>;

export class Tent extends PaperSgdAdapter<z.output<typeof tentSchema>> {
  readonly name = 'tent';
  private readonly step: TrainStep;

  constructor(model: RefitModel, options: TentOptions = {}) {
    const o = parseOptions('tent', tentSchema, options);
    super(model, o, (m) => o.params ?? normAffineParams('tent', m));
    this.step = this.model.compileTrainStep({
      trainable: this.trainable,
      loss: softmaxEntropy({ logits: this.logits, ...(o.frames ? { classesLast: true } : {}) }),
      outputs: [this.logits],
      batchNorm: 'train',
      session: this.sessionOptions,
    });
  }

  /** Dense logits (segmentation): the entropy of each position, averaged (softmaxEntropy), as the paper's segmentation runs. */
  protected override takesDenseLogits(): boolean {
    return true;
  }

  /** Frame logits [batch, frames, classes] with `frames: true`. */
  protected override takesSequenceLogits(): boolean {
    return this.opts?.frames === true;
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const r = await this.step.run({ [this.model.inputs[0]!.name]: x });
    const n = x.dims[0]!;
    const ok = this.applyStep(r, n);
    return { logits: r.outputs[this.logits]!, used: ok ? n : 0, loss: r.loss };
  }

  override async release(): Promise<void> {
    await this.step.release();
    await super.release();
  }
}
