// Dynamic evaluation (Krause, Kahembwe, Murray & Renals, ICML 2018, "Dynamic Evaluation of Neural
// Sequence Models"; on transformers: Krause et al. 2019, arXiv:1904.08378). A language model that
// reads a stream adapts to it by gradient descent on what it has just read. Each batch of token
// sequences is scored with the current parameters first (its next-token log-loss before the update
// is the online measure the papers report), then the parameters take one step on that same
// next-token loss: once read, the text is its own label, so nothing needs labelling. The update is
// the papers' SGD rule with their decay toward the trained parameters ("global prior"):
//   θ ← θ − η ∇L(batch) + λ (θ_source − θ)
// Deviations, as written down in docs/tta.md:
// - The papers' best rule divides each gradient by the root mean square of gradients collected on
//   the training data (their RMS rule). There is no training data at test time here, so this is
//   their plain SGD rule, with the decay.
// - The papers adapt on consecutive segments of one long sequence. Here a batch is B sequences (the
//   rows), scored and stepped together. Positions whose next token is `padToken` get no label.
// - refit's own guard (not in the papers): plain SGD here has a narrow stable range (on the
//   fortunes bench one grid step above the best rate ran to millions of nats per token). When a
//   batch's loss exceeds `resetAbove` times the moving average of the earlier batches' losses, the
//   parameters go back to the source and that batch's step is not taken. A topic shift moved the
//   loss by 10-20 % there; a blow-up moves it by orders of magnitude.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import { tokenCrossEntropy } from '../train/losses.ts';
import type { TrainStep } from '../train/train-step.ts';
import { SGD, type Optimizer } from '../train/optim/index.ts';
import { commonOptions, parseOptions, ParamAdapter, metaNumber, type AdaptOutcome } from './common.ts';
import type { AdapterState } from './types.ts';

/**
 * lr and decay: chosen on the validation stream of bench/text/dynamic-eval.ts (never on its test
 * stream) for a 2.3M-parameter model; a larger model wants a smaller rate. resetAbove: the guard's
 * threshold, not tuned (it never fired at these settings there). lossMomentum: the guard's average.
 */
export const DYNAMIC_EVAL_DEFAULTS = { lr: 0.1, decay: 0, resetAbove: 2, lossMomentum: 0.9 } as const;

export const dynamicEvalSchema = z.object({
  ...commonOptions,
  /** SGD learning rate η. */
  lr: z.number().positive().default(DYNAMIC_EVAL_DEFAULTS.lr),
  /** λ: the share of the way back to the source parameters after each step (0: none, 1: all the way). */
  decay: z.number().min(0).max(1).default(DYNAMIC_EVAL_DEFAULTS.decay),
  /** Parameters to adapt (default: every parameter, as the papers). */
  params: z.array(z.string()).min(1).optional(),
  /** The padding id: a position whose next token is padding has no label. */
  padToken: z.number().int().min(0).optional(),
  /** Back to the source when a batch's loss exceeds this many times the loss average (0: never). */
  resetAbove: z.number().refine((v) => v === 0 || v > 1, 'must be 0 (off) or above 1').default(DYNAMIC_EVAL_DEFAULTS.resetAbove),
});
export type DynamicEvalOptions = z.input<typeof dynamicEvalSchema>;

const IGNORE = -100;
const LABELS = 'refit_next_tokens';

export class DynamicEval extends ParamAdapter<z.output<typeof dynamicEvalSchema>> {
  readonly name = 'dynamic-eval';
  private readonly step: TrainStep;
  /** Moving average of the batches' losses (before their updates), for the reset guard. */
  private lossEma: number | null = null;

  constructor(model: RefitModel, options: DynamicEvalOptions = {}) {
    const o = parseOptions('dynamic-eval', dynamicEvalSchema, options);
    super(model, o, (m) => o.params ?? m.parameterNames('all'));
    const rank = model.outputs.find((out) => out.name === this.logits)!.shape?.length;
    if (rank !== undefined && rank !== 3) throw new Error(`dynamic-eval adapts language models: output '${this.logits}' must be [batch, sequence, vocabulary] logits, and it has ${rank} dims`);
    this.step = this.model.compileTrainStep({
      trainable: this.trainable,
      loss: tokenCrossEntropy({ logits: this.logits, labels: LABELS }),
      outputs: [this.logits],
      session: this.sessionOptions,
    });
  }

  protected override takesSequenceLogits(): boolean {
    return true;
  }

  protected defaultLr(): number {
    return this.opts.lr;
  }

  protected makeOptimizer(lr: number): Optimizer {
    return new SGD({ lr, momentum: 0 });
  }

  /** Next-token labels of ids [batch, length]: position t's label is token t + 1; none for the last position or a next token that pads. */
  private labelsOf(x: Tensor): Tensor {
    const [b, T] = x.dims as [number, number];
    const ids = x.data as ArrayLike<number | bigint>;
    return tensorOf('int64', [b, T], (i) => {
      if (i % T === T - 1) return IGNORE;
      const next = Number(ids[i + 1]);
      return next === this.opts.padToken ? IGNORE : next;
    });
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    if (x.dims.length !== 2) throw new Error(`dynamic-eval: token ids must be [batch, length], got [${x.dims.join(', ')}]`);
    const r = await this.step.run({ [this.model.inputs[0]!.name]: x, [LABELS]: this.labelsOf(x) });
    const n = x.dims[0]!;
    const logits = r.outputs[this.logits]!;
    const ema = this.lossEma;
    if (this.opts.resetAbove > 0 && ema !== null && Number.isFinite(r.loss) && r.loss > this.opts.resetAbove * ema) {
      this.restoreSource(); // the batch's gradient comes from the diverged parameters: not taken
      this.lossEma = ema;
      return { logits, used: 0, loss: r.loss, extra: { diverged: 1, lossEma: ema } };
    }
    if (Number.isFinite(r.loss)) this.lossEma = ema === null ? r.loss : DYNAMIC_EVAL_DEFAULTS.lossMomentum * ema + (1 - DYNAMIC_EVAL_DEFAULTS.lossMomentum) * r.loss;
    const ok = this.applyStep(r, n);
    if (ok && this.opts.decay > 0) this.decayTowardSource(this.opts.decay);
    return { logits, used: ok ? n : 0, loss: r.loss };
  }

  protected override resetMethodState(): void {
    this.lossEma = null;
  }

  protected override saveExtra(_t: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    meta.lossEma = this.lossEma;
  }

  protected override loadExtra(state: AdapterState): () => void {
    const ema = metaNumber(state, 'lossEma', 'dynamic-eval');
    return () => { this.lossEma = ema; };
  }

  override async release(): Promise<void> {
    await this.step.release();
    await super.release();
  }
}
