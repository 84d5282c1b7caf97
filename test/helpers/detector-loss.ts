// A torchvision detector's loss without targets (bench/arch_detection.py's cases): weighted sums or
// means of its outputs, e.g. the kept scores plus 0.01 · the decoded boxes.
import type { LossSpec } from '../../src/train/loss-spec.ts';

export function detectorLoss(terms: [output: string, weight: number, how: 'sum' | 'mean'][]): LossSpec {
  return {
    describe: terms.map(([o, w, how]) => `${w}·${how}(${o})`).join(' + '), reads: terms.map(([o]) => o), inputs: [],
    build: (ctx) => ctx.em.sum(terms.map(([o, w, how]) => ctx.em.mul(ctx.em.reduce(how === 'sum' ? 'ReduceSum' : 'ReduceMean', o, ctx.shape(o).map((_, i) => i), false), ctx.em.scalar(w)))),
  };
}
