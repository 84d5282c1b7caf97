// The contract every gradient rule implements, and the registry they join.
import type { Node } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import type { Tensor, DType } from '../onnx/tensor.ts';

export interface GradContext {
  em: Emitter;
  opset: number;
  /** Static shape of any tensor in the forward graph for the current input signature. */
  shape(name: string): number[];
  dtype(name: string): DType;
  /** The value of a tensor fixed at compile time (initializer or Constant output), if it is one. */
  constant(name: string): Tensor | undefined;
  /** Sum a gradient of a broadcast result down to the shape of `target` (NumPy broadcasting). */
  unbroadcast(grad: string, gradShape: number[], targetShape: number[]): string;
  /** An embedding table's padding row, whose lookups pass no gradient (PyTorch's padding_idx: src/onnx/padding-rows.ts). */
  paddingRow?(table: string): number | undefined;
}

/**
 * Given the gradients flowing into a node's outputs (null where none flows), return one
 * gradient per input (null where not needed or not defined). `needs[i]` says whether input i
 * wants a gradient; rules skip work for inputs that do not.
 */
export type GradRule = (ctx: GradContext, node: Node, dOut: (string | null)[], needs: boolean[]) => (string | null)[];

const RULES = new Map<string, GradRule>();

export function registerRules(rules: Record<string, GradRule>): void {
  for (const [op, rule] of Object.entries(rules)) RULES.set(op, rule);
}

export function ruleFor(opType: string): GradRule | undefined {
  return RULES.get(opType);
}

export function supportedOps(): string[] {
  return [...RULES.keys(), ...NO_GRADIENT_OPS].sort();
}

/**
 * Ops whose every output carries no gradient to any input: shapes, indices, comparisons, random
 * draws, and piecewise-constant functions (zero derivative almost everywhere: Sign, Floor, Ceil,
 * Round, Hardmax). Exact: an op with even one differentiable path is not listed, so reaching it
 * from a trainable is reported as a missing rule instead of a silent zero: TopK's and Unique's
 * values, float Range's start and delta. Quantization ops
 * are left to their rules (straight-through estimation is a choice, not a fact).
 */
export const NO_GRADIENT_OPS = new Set([
  'Shape', 'Size', 'Constant', 'ConstantOfShape', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual',
  'Not', 'And', 'Or', 'Xor', 'ArgMax', 'ArgMin', 'NonZero', 'EyeLike', 'RandomNormal', 'RandomUniform',
  'RandomNormalLike', 'RandomUniformLike', 'Bernoulli', 'Multinomial', 'IsNaN', 'IsInf', 'Sign', 'Floor', 'Ceil', 'Round',
  'Hardmax', 'NonMaxSuppression', 'BitShift', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor', 'BitwiseNot',
]);
