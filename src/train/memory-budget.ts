// compileTrainStep({ memoryBudget }): choose what trains so that the step fits a memory budget.
//
// Candidates ("rungs") go from most to least capacity; each is compiled to its step graph (no
// session) and accounted (./memory-accounting.ts) at the budget's batch size, and the first whose
// total fits is the step. A rung that backpropagates further costs more activations whatever it
// trains, so a later rung is not always cheaper (norm-affine on every layer keeps almost every
// activation of a full step): a later rung is only reached when every earlier one is over budget.
//   all               every parameter
//   lora              LoRA (rank 4) on every linear/conv layer wider than the rank (grouped and
//                     quantized ones excepted), base frozen
//   norm-affine       the scale and shift of every normalisation layer (BatchNorm, LayerNorm …)
//   lora-last         LoRA on the layers of the last blocks, plus norm-affine from there on
//   norm-affine-last  norm-affine of the layers from the last blocks on
//   head              the last linear layer's weight and bias
// A "block" is a module name's prefix up to its last numeric part (`layer3.0`, `blocks.5`); the
// last blocks are the last max(1, ⌊blocks/3⌋) of them (`lastBlocks` overrides). With
// `checkpoint: true`, a rung that does not fit is tried again with activation checkpointing
// (./checkpoint.ts) before the next rung.
import type { RefitModel, CompileOptions } from '../model.ts';
import type { InputSignature } from '../onnx/shapes.ts';
import { PeftModel } from '../peft/peft-model.ts';
import { lora } from '../peft/lora/index.ts';
import type { Site } from '../peft/sites.ts';
import { findNormLayers } from '../onnx/norm-layers.ts';
import { parameterCandidates } from './params.ts';
import { buildStepGraph } from './step-graph.ts';
import { TrainStep } from './train-step.ts';
import { accountStep, livenessPeak, formatBytes, OPTIMIZER_SLOTS, type OptimizerKind, type StepMemory } from './memory-accounting.ts';

export type BudgetRung = 'all' | 'lora' | 'norm-affine' | 'lora-last' | 'norm-affine-last' | 'head';
export const BUDGET_RUNGS: readonly BudgetRung[] = ['all', 'lora', 'norm-affine', 'lora-last', 'norm-affine-last', 'head'];

export interface MemoryBudget {
  /** The budget in bytes: activations kept for the backward + batch + trainable and frozen parameters + gradients + optimizer state (see `count`). */
  bytes: number;
  /** Batch size to account at (fills each model input's first dimension). Needed when an input's batch dimension is symbolic. */
  batch?: number;
  /** Or the full input signature. */
  inputs?: InputSignature;
  /** Whose state to count. @default 'adamw' (two float32 moments per trainable element) */
  optimizer?: OptimizerKind;
  /** Rungs to try, in order. @default BUDGET_RUNGS */
  candidates?: readonly BudgetRung[];
  /** LoRA rank for the lora rungs. @default 4 */
  loraRank?: number;
  /** How many trailing blocks the *-last rungs train. @default max(1, ⌊blocks/3⌋) */
  lastBlocks?: number;
  /** Name of the LoRA adapter the lora rungs add. @default 'budget' */
  adapterName?: string;
  /**
   * What is compared with `bytes`. 'saved' (default without `checkpoint`): StepMemory.totalBytes, the activations kept for
   * the backward plus batch, parameters, gradients, optimizer state and frozen weights. 'liveness':
   * StepMemory.peakEstimateBytes, with the most node outputs alive at once in place of the saved
   * activations and gradients (./memory-accounting.ts livenessPeak: also the forward's transient
   * tensors and the backward's temporaries; one more shape inference per rung). Measured against
   * onnxruntime-node's peak in docs/web.md "Memory budget". The default with `checkpoint`.
   */
  count?: 'saved' | 'liveness';
  /**
   * Also try each rung with activation checkpointing (./checkpoint.ts) when it does not fit as is,
   * before dropping to the next rung: same parameters train, some forward nodes run twice. Counts
   * with 'liveness' unless `count` says otherwise: checkpointing lowers the saved activations, and
   * on the shipped models at batch 32 it did not lower the measured peak (docs/web.md).
   * @default false
   */
  checkpoint?: boolean;
}

export type BudgetCompileOptions = Omit<CompileOptions, 'trainable' | 'memoryBudget'> & {
  /** With a budget: tried first (as rung 'requested'), before the rungs after 'all'. */
  trainable?: CompileOptions['trainable'];
  memoryBudget: number | MemoryBudget;
};

/** One rung as accounted: what it trains and what it costs. */
export interface BudgetCandidate {
  rung: BudgetRung | 'requested';
  /** Accounted with activation checkpointing (memoryBudget.checkpoint). */
  checkpoint?: boolean;
  /** What trains, in words. */
  trains: string;
  trainableParams: number;
  /** The bytes compared with the budget (see MemoryBudget.count), or undefined when the rung does not apply to this model. */
  totalBytes?: number;
  activationBytes?: number;
  fits: boolean;
  /** Why it was skipped (no normalisation layers, no LoRA site …). */
  skipped?: string;
}

export interface BudgetChoice {
  budgetBytes: number;
  batch: number;
  optimizer: OptimizerKind;
  count: 'saved' | 'liveness';
  /** The bytes compared with the budget. */
  countedBytes: number;
  rung: BudgetRung | 'requested';
  /** The step recomputes activations (memoryBudget.checkpoint). */
  checkpoint: boolean;
  trains: string;
  trainable: string[];
  memory: StepMemory;
  /** Rungs tried before the chosen one, each over budget or not applicable. */
  dropped: BudgetCandidate[];
  /** The LoRA adapter added by a lora rung (the step's model is then a PeftModel holding it). */
  adapter?: string;
}

/** A TrainStep chosen to fit a memory budget; `budget` says what trains and what it costs. */
export class BudgetedTrainStep extends TrainStep {
  constructor(model: RefitModel, options: ConstructorParameters<typeof TrainStep>[1], session: ConstructorParameters<typeof TrainStep>[2], readonly budget: BudgetChoice) {
    super(model, options, session);
  }
}

export class MemoryBudgetError extends Error {
  constructor(message: string, readonly candidates: BudgetCandidate[]) {
    super(message);
    this.name = 'MemoryBudgetError';
  }
}

interface Plan { rung: BudgetRung | 'requested'; model: RefitModel; trainable: string[]; trains: string; adapter?: string }

const blockOf = (module: string): string | undefined => /^(.*\.\d+)(\.|$)/.exec(module)?.[1];

export async function compileWithinBudget(model: RefitModel, opts: BudgetCompileOptions): Promise<BudgetedTrainStep> {
  const mb: MemoryBudget = typeof opts.memoryBudget === 'number' ? { bytes: opts.memoryBudget } : opts.memoryBudget;
  if (typeof mb !== 'object' || mb === null) throw new Error(`memoryBudget must be a number of bytes or { bytes, batch, … }, got ${String(opts.memoryBudget)}`);
  if (typeof mb.bytes !== 'number' || !Number.isFinite(mb.bytes) || mb.bytes <= 0) throw new Error(`memoryBudget.bytes must be a positive number of bytes, got ${String(mb.bytes)}`);
  const optimizer = mb.optimizer ?? 'adamw';
  if (!(optimizer in OPTIMIZER_SLOTS)) throw new Error(`memoryBudget.optimizer must be one of ${Object.keys(OPTIMIZER_SLOTS).join(', ')}, got '${String(optimizer)}'`);
  // Checkpointing lowers the saved activations but not always the peak (docs/web.md "Memory budget":
  // on the shipped models it did not), so with it the default count is the liveness estimate.
  const count = mb.count ?? (mb.checkpoint ? 'liveness' : 'saved');
  if (count !== 'saved' && count !== 'liveness') throw new Error(`memoryBudget.count must be 'saved' or 'liveness', got '${String(count)}'`);
  const rungs = mb.candidates ?? BUDGET_RUNGS;
  for (const r of rungs) if (!BUDGET_RUNGS.includes(r)) throw new Error(`memoryBudget.candidates: unknown rung '${String(r)}'; rungs: ${BUDGET_RUNGS.join(', ')}`);
  const sig = signatureFor(model, mb);
  const batch = Object.values(sig)[0]?.dims[0] ?? 1;

  const plans: (() => Plan)[] = [];
  if (opts.trainable !== undefined) {
    const names = model.parameterNames(opts.trainable);
    plans.push(() => ({ rung: 'requested', model, trainable: names, trains: describeNames(names) }));
  }
  for (const r of opts.trainable !== undefined ? rungs.filter((x) => x !== 'all') : rungs) plans.push(() => planRung(model, r, mb));

  const tried: BudgetCandidate[] = [];
  for (const make of plans) {
    let plan: Plan;
    try {
      plan = make();
    } catch (e) {
      if (!(e instanceof RungSkip)) throw e;
      tried.push({ rung: e.rung, trains: '', trainableParams: 0, fits: false, skipped: e.message });
      continue;
    }
    // Plain first; with memoryBudget.checkpoint, the same rung recomputing activations next (same capacity, more compute).
    for (const checkpoint of mb.checkpoint ? [false, true] : [false]) {
      const stepOpts = { trainable: plan.trainable, loss: opts.loss, outputs: opts.outputs, batchNorm: opts.batchNorm, ...(checkpoint ? { checkpoint: true } : {}), ...(opts.stopGradient?.length ? { stopGradient: opts.stopGradient } : {}) };
      const graph = await buildStepGraph(plan.model.ir, sig, stepOpts);
      const memory = accountStep(graph, plan.model.ir, plan.trainable, { optimizer });
      if (count === 'liveness') {
        memory.livenessPeakBytes = (await livenessPeak(graph)).peakBytes;
        memory.peakEstimateBytes = memory.livenessPeakBytes + memory.inputBytes + memory.trainableBytes + memory.optimizerStateBytes + memory.frozenBytes;
      }
      const counted = count === 'liveness' ? memory.peakEstimateBytes! : memory.totalBytes;
      const trains = checkpoint ? `${plan.trains}, activations checkpointed` : plan.trains;
      const cand: BudgetCandidate = { rung: plan.rung, checkpoint, trains, trainableParams: memory.trainableParams, totalBytes: counted, activationBytes: memory.activationBytes, fits: counted <= mb.bytes };
      if (cand.fits) {
        const choice: BudgetChoice = { budgetBytes: mb.bytes, batch, optimizer, count, countedBytes: counted, rung: plan.rung, checkpoint, trains, trainable: plan.trainable, memory, dropped: tried, ...(plan.adapter ? { adapter: plan.adapter } : {}) };
        return new BudgetedTrainStep(plan.model, stepOpts, opts.session ?? plan.model.sessionOptions, choice);
      }
      tried.push(cand);
    }
  }
  const costed = tried.filter((c) => c.totalBytes !== undefined);
  if (costed.length === 0) throw new MemoryBudgetError(`memoryBudget: no candidate applies to this model (${tried.map((c) => `${c.rung}: ${c.skipped}`).join('; ')})`, tried);
  const smallest = costed.reduce((a, c) => (c.totalBytes! < a.totalBytes! ? c : a));
  throw new MemoryBudgetError(
    `memoryBudget of ${formatBytes(mb.bytes)} (${mb.bytes} bytes; batch ${batch}, ${optimizer}${count === 'liveness' ? ', liveness estimate' : ''}) fits no candidate: the smallest, '${smallest.rung}'${smallest.checkpoint ? ' checkpointed' : ''} (${smallest.trains}), needs ${formatBytes(smallest.totalBytes!)} (${smallest.totalBytes} bytes, of which ${formatBytes(smallest.activationBytes!)} activations kept for the backward). ` +
    `Tried: ${tried.map((c) => c.totalBytes === undefined ? `${c.rung} (${c.skipped})` : `${c.rung}${c.checkpoint ? ' checkpointed' : ''} ${formatBytes(c.totalBytes)}`).join(', ')}. Raise the budget or lower the batch (activations scale with it).`,
    tried,
  );
}

class RungSkip extends Error {
  constructor(readonly rung: BudgetRung, why: string) { super(why); }
}

function signatureFor(model: RefitModel, mb: MemoryBudget): InputSignature {
  if (mb.inputs) return mb.inputs;
  if (mb.batch !== undefined && (!Number.isInteger(mb.batch) || mb.batch < 1)) throw new Error(`memoryBudget.batch must be a positive integer, got ${String(mb.batch)}`);
  const sig: InputSignature = {};
  for (const i of model.inputs) {
    const dims = (i.shape ?? []).map((d, k) => {
      if (typeof d === 'number' && d > 0) return k === 0 && mb.batch !== undefined ? mb.batch : d;
      if (k === 0 && mb.batch !== undefined) return mb.batch;
      const fix = k === 0 ? 'pass memoryBudget.batch (the batch size to account at) or memoryBudget.inputs' : `pass memoryBudget.inputs, every input's dims (e.g. { ${i.name}: { dtype: '${i.dtype}', dims: [${(i.shape ?? []).map((e, j) => (typeof e === 'number' && e > 0 ? e : j === 0 ? mb.batch ?? 'N' : '…')).join(', ')}] } }): batch fills only the first`;
      throw new Error(`memoryBudget: input '${i.name}' has dimension ${k} = ${JSON.stringify(d)}, unknown until a batch arrives; ${fix}`);
    });
    if (i.shape === null) throw new Error(`memoryBudget: input '${i.name}' has no declared shape; pass memoryBudget.inputs`);
    sig[i.name] = { dtype: i.dtype, dims };
  }
  return sig;
}

function describeNames(names: string[]): string {
  return names.length <= 4 ? names.join(', ') : `${names.slice(0, 3).join(', ')} … (${names.length} tensors)`;
}

function planRung(model: RefitModel, rung: BudgetRung, mb: MemoryBudget): Plan {
  const g = model.ir.graph;
  const peft = PeftModel.from(model);
  const sites = peft.sites();
  const candidates = new Set(parameterCandidates(g));
  const nodeIndex = new Map(g.nodes.map((n, i) => [n.name, i]));
  const blocks = [...new Set(sites.map((s) => blockOf(s.module)).filter((b): b is string => !!b))];
  const nLast = mb.lastBlocks ?? Math.max(1, Math.floor(blocks.length / 3));
  if (!Number.isInteger(nLast) || nLast < 1) throw new Error(`memoryBudget.lastBlocks must be a positive integer, got ${String(mb.lastBlocks)}`);
  const lastBlocks = new Set(blocks.slice(-nLast));
  const lastSites = sites.filter((s) => lastBlocks.has(blockOf(s.module) ?? ''));
  // The last blocks start at their first layer's node; norm layers from there on train in the *-last rungs.
  const start = lastSites.length ? Math.min(...lastSites.map((s) => nodeIndex.get(s.node) ?? Infinity)) : Infinity;
  const norms = (from: number) => findNormLayers(g).filter((l) => (nodeIndex.get(l.nodes[0]!) ?? -1) >= from)
    .flatMap((l) => [l.scale, l.bias]).filter((p): p is string => !!p && candidates.has(p));
  const loraOn = (chosen: Site[], what: string, extra: string[] = []): Plan => {
    const rank = mb.loraRank ?? 4;
    // LoRA on a layer no wider than the rank would not be low-rank (and lora() refuses it).
    const ok = chosen.filter((s) => (s.group ?? 1) === 1 && !s.quant && Math.min(s.dIn, s.dOut) > rank);
    if (ok.length === 0) throw new RungSkip(rung, `no layer${what} takes LoRA of rank ${rank} (each is grouped, quantized or at most ${rank} wide)`);
    const name = mb.adapterName ?? 'budget';
    const modules = new Set(ok.map((s) => s.module));
    const p = peft.withAdapter(name, lora({ targets: (s) => modules.has(s.module), rank, alpha: rank }));
    const trainable = [...p.trainableNames(name), ...extra];
    return { rung, model: p, trainable, adapter: name, trains: `LoRA rank ${rank} on ${ok.length} layers${what}${extra.length ? ` + ${extra.length} norm-affine tensors` : ''}` };
  };
  switch (rung) {
    case 'all': {
      const names = [...candidates];
      return { rung, model, trainable: names, trains: `all ${names.length} parameter tensors` };
    }
    case 'lora': return loraOn(sites, '');
    case 'norm-affine': {
      const names = norms(0);
      if (!names.length) throw new RungSkip(rung, 'the model has no normalisation layer with a stored scale or shift');
      return { rung, model, trainable: names, trains: `norm-affine (${names.length} tensors)` };
    }
    case 'lora-last': {
      if (!lastSites.length) throw new RungSkip(rung, 'no numbered blocks (module names like blocks.3.…)');
      return loraOn(lastSites, ` of blocks ${[...lastBlocks].join(', ')}`, norms(start));
    }
    case 'norm-affine-last': {
      const names = norms(start);
      if (!names.length) throw new RungSkip(rung, lastSites.length ? `no normalisation layer from block ${[...lastBlocks][0]} on` : 'no numbered blocks (module names like blocks.3.…)');
      return { rung, model, trainable: names, trains: `norm-affine from block ${[...lastBlocks][0]} on (${names.length} tensors)` };
    }
    case 'head': {
      const last = sites.at(-1);
      if (!last) throw new RungSkip(rung, 'the model has no linear or conv layer');
      const names = [last.weight, ...(last.bias ? [last.bias] : [])].filter((n) => candidates.has(n));
      if (!names.length) throw new RungSkip(rung, `the last layer '${last.module}' has no trainable weight`);
      return { rung, model, trainable: names, trains: `the last layer '${last.module}' (${names.join(', ')})` };
    }
  }
}
