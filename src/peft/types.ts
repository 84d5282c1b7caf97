// The one interface every PEFT method implements: plan an adapter on a graph (resolve targets,
// create its tensors), then rewrite the graph, and optionally fold it into the base weights.
import type { Graph, Model } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { Site } from './sites.ts';

export interface PlanContext {
  /** The graph the adapter attaches to (base plus merged and earlier adapters). */
  graph: Graph;
  /** The adapter's name; its tensors are named `<name>.<kind>.<module>`. */
  name: string;
  /** Attachable layers of the base graph (adapter-made nodes excluded). */
  sites: Site[];
  /** Current value of an initializer. */
  value(name: string): Tensor;
  /** The base model's opset imports and producer: where it came from, for messages. */
  source?: Pick<Model, 'opsets' | 'producerName'>;
}

export interface ApplyContext {
  graph: Graph;
  /** Emits nodes named `<adapter>/…`. */
  em: Emitter;
  /** A scalar tensor: the adapter's blend weight (1 = fully on, 0 = off). */
  gate: string;
}

export interface AdapterPlan {
  /** The method, as HF PEFT's `peft_type` spells it where it has one (`LORA`, `IA3`, `VERA`). */
  peftType: string;
  /** New initializers (trainable and frozen) with their initial values. */
  tensors: Map<string, Tensor>;
  /** Replacement values for base initializers this adapter owns (PiSSA's residual, BitFit's trained copies). */
  overrides: Map<string, Tensor>;
  /** Tensors to train: a subset of `tensors` and `overrides`. */
  trainable: string[];
  /** File key for each saved tensor (HF PEFT layout); tensors not listed are not saved. */
  fileKeys: Map<string, string>;
  /** The `adapter_config.json` content. */
  fileConfig: Record<string, unknown>;
  /**
   * Custom file content from current values (PiSSA saves a plain LoRA of rank 2r relative to the
   * original weights). Default: `fileKeys` and `fileConfig`.
   */
  toFiles?(value: (name: string) => Tensor): { tensors: Map<string, Tensor>; config: Record<string, unknown> };
  /** Per-tensor learning-rate multipliers (LoRA+). */
  lrScales?: Map<string, number>;
  /** Rewrite the graph; `tensors` and `overrides` are already initializers there. */
  apply(ctx: ApplyContext): void;
  /**
   * New values of base initializers with the adapter folded in, from current values. Absent
   * when the adapter cannot be folded (bottleneck adapters, a new head): merging then bakes
   * the rewrite into the base graph instead.
   */
  fold?(value: (name: string) => Tensor): Map<string, Tensor>;
}

export interface AdapterMethod {
  /** Short method name for messages: 'lora', 'dora', 'ia3', … */
  readonly method: string;
  plan(ctx: PlanContext): AdapterPlan;
}
