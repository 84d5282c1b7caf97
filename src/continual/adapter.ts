// The escalation controller behind the TTA `Adapter` interface, so streams, `refit demo` and
// reports can run it beside the single methods. Its logits are log-probabilities (after every
// correction); `info.extra` carries the level and whether the entropy detector raised a drift alarm.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { Adapter, AdaptResult } from '../tta/types.ts';
import { ContinualController, type ControllerOptions } from './controller.ts';

export class ContinualAdapter implements Adapter {
  readonly name = 'continual';
  private controller: ContinualController;
  private resets = 0;
  private calibrated: number | null = null;

  constructor(readonly model: RefitModel, readonly options: ControllerOptions = {}, private readonly calibration: Tensor[] = []) {
    this.controller = new ContinualController(model, options);
  }

  get current(): ContinualController {
    return this.controller;
  }

  async predict(x: Tensor): Promise<AdaptResult> {
    const t0 = performance.now();
    if (this.calibration.length && this.calibrated === null) this.calibrated = await this.controller.calibrate(this.calibration);
    const setup = this.controller.deepSetupMs;
    const r = await this.controller.predict(x);
    const setupMs = this.controller.deepSetupMs - setup;
    const logits = new Float32Array(r.probs.length);
    for (let i = 0; i < logits.length; i++) logits[i] = Math.log(Math.max(r.probs[i]!, 1e-30));
    const n = x.dims[0]!;
    return {
      logits: { dtype: 'float32', dims: [n, r.probs.length / n], data: logits },
      info: {
        used: r.level >= 2 ? n : 0, skipped: this.controller.learner.skipped, resets: this.resets, ms: performance.now() - t0, ...(setupMs > 0 ? { setupMs } : {}),
        extra: { level: r.level, drift: r.signals.drift ? 1 : 0, entropy: r.signals.entropy },
      },
    };
  }

  /** A fresh controller: back to the source, the calibration kept. */
  reset(): void {
    void this.controller.release();
    this.controller = new ContinualController(this.model, this.options);
    this.calibrated = null;
    this.resets++;
  }

  async release(): Promise<void> {
    await this.controller.release();
  }
}
