// The training loop step: run the compiled step, refuse non-finite results, clip, update.
import type { TrainStep } from './train-step.ts';
import type { Optimizer } from './optim/index.ts';
import { clipGradNorm } from './optim/index.ts';
import type { Tensor } from '../onnx/tensor.ts';

export interface TrainerOptions {
  /** Clip the global gradient norm to this value (torch.nn.utils.clip_grad_norm_). */
  clipNorm?: number;
  /** With batchNorm 'train': write the updated running statistics into the model (default true). */
  keepRunningStats?: boolean;
}

export interface TrainerStepResult {
  loss: number;
  /** True when the step was refused (non-finite loss or gradient); parameters are unchanged. */
  skipped: boolean;
  reason?: string;
  gradNorm?: number;
  outputs: Record<string, Tensor>;
}

export class Trainer {
  /** Steps refused because the loss or a gradient was NaN/Inf. */
  skippedSteps = 0;
  steps = 0;
  private params: Map<string, Float32Array>;

  constructor(readonly compiled: TrainStep, readonly optimizer: Optimizer, readonly options: TrainerOptions = {}) {
    // Views onto the model's live parameter arrays: the optimizer updates them in place, so
    // they are the model's own (not shared with a sharing clone: RefitModel.own).
    compiled.model.own(compiled.trainable);
    this.params = new Map(compiled.trainable.map((p) => [p, compiled.model.param(p).data as Float32Array]));
  }

  async step(batch: Record<string, Tensor>): Promise<TrainerStepResult> {
    const r = await this.compiled.run(batch);
    if (!r.finite) return this.skip(r.loss, `loss is ${r.loss}`, r.outputs);
    const bad = r.nonFiniteGrad;
    if (bad) return this.skip(r.loss, `gradient of '${bad.param}' has a non-finite value at ${bad.index}`, r.outputs);
    const gradNorm = this.options.clipNorm ? clipGradNorm(r.grads, this.options.clipNorm) : undefined;
    this.optimizer.step(this.params, r.grads, { gradsFinite: true });
    const model = this.compiled.model;
    const changed = [...this.params.keys()];
    if (r.runningStats.size > 0 && this.options.keepRunningStats !== false) {
      model.own(r.runningStats.keys());
      for (const [p, v] of r.runningStats) (model.param(p).data as Float32Array).set(v);
      changed.push(...r.runningStats.keys());
    }
    model.touch(changed);
    this.steps++;
    return { loss: r.loss, skipped: false, gradNorm, outputs: r.outputs };
  }

  private skip(loss: number, reason: string, outputs: Record<string, Tensor>): TrainerStepResult {
    this.skippedSteps++;
    return { loss, skipped: true, reason, outputs };
  }
}
