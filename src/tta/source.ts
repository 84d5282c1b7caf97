// Source: the unadapted model, the baseline every method is scored against.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { type Adapter, type AdaptResult, defaultLogits } from './types.ts';
import { checkBatch } from './common.ts';

export class Source implements Adapter {
  readonly name = 'source';
  private readonly logits: string;

  constructor(readonly model: RefitModel, opts: { logits?: string } = {}) {
    this.logits = opts.logits ?? defaultLogits(model.outputs);
  }

  async predict(x: Tensor): Promise<AdaptResult> {
    checkBatch(this.name, this.model, x);
    const t0 = performance.now();
    const out = await this.model.run({ [this.model.inputs[0]!.name]: x }, { outputs: [this.logits] });
    return { logits: out[this.logits]!, info: { used: 0, skipped: 0, resets: 0, ms: performance.now() - t0 } };
  }

  reset(): void {}
  async release(): Promise<void> {}
}
