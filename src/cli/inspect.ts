// `refit inspect model.onnx`: what a model takes and gives, and what refit can train in it.
// The graph walk is diagnoseTraining's (src/autodiff/diagnose.ts); this file only loads and
// formats.
import { quantizedValues } from '../peft/accounting.ts';
import { computedWeightNodes, packedAttentionNodes } from '../peft/sites.ts';
import { tokenIdsInput, vocabularySize, isCompanion, positionTableRows } from '../onnx/token-companions.ts';
import { kvCacheOf, withoutKvCache } from '../onnx/kv-cache.ts';
import { loadModel } from '../model.ts';
import { readModelFile } from '../onnx/io.ts';
import { opsetVersion, type Model, type ValueInfo } from '../onnx/ir.ts';
import type { UpgradeReport } from '../onnx/opset-upgrade.ts';
import { diagnoseTraining, type GroupBlocker } from '../autodiff/diagnose.ts';
import { inputsBehind } from '../autodiff/missing-rules.ts';
import { branchWeights } from '../onnx/branch-weights.ts';
import { supportedOps, NO_GRADIENT_OPS } from '../autodiff/rule.ts';
import { DATA_SHAPED_OPS, dataShapedOutputs, subgraphDataShapes } from '../onnx/data-shapes.ts';
import { textEncoder } from './text-tokens.ts';

export interface InspectResult {
  model: string;
  opset: number;
  /** Set when the model was below opset 13 and loadModel upgraded it (verified in onnxruntime). */
  upgrade: UpgradeReport | null;
  /** Set when the upgrade failed: the graph is then shown as stored, and refit cannot run it. */
  upgradeError?: string;
  inputs: { name: string; dtype: string; shape: (number | string | null)[] | null }[];
  outputs: { name: string; dtype: string; shape: (number | string | null)[] | null }[];
  nodes: number;
  opCounts: Record<string, number>;
  ops: {
    /** Op types with a gradient rule in refit. */
    differentiable: string[];
    /** Op types whose outputs carry no gradient (shapes, comparisons): nothing to differentiate. */
    noGradient: string[];
    /** Op types without a rule of their own that compile by lowering (LSTM, fused ops). */
    lowered: string[];
    /** Op types refit cannot differentiate; they block training only on a parameter's gradient path. */
    withoutRule: string[];
  };
  /** Float parameters; `quantized`: weight values the model holds quantized (int8, 4-bit), frozen. */
  parameters: { tensors: number; values: number; quantized: number };
  /** A token model: the ids input, its vocabulary, and the inputs refit makes from the ids (withTokenInputs, --pad-token). */
  tokens?: {
    ids: string; vocab: number | null; companions: string[];
    /** The rows of the model's learned position table, if it has one: the longest sequence it reads. */
    positions: number | null;
    /**
     * The Hugging Face tokenizer beside the model (./text-tokens.ts): text files then train, evaluate
     * and adapt it. `maxLength`: its model_max_length (or 512); `pairs`: how a text pair's second
     * segment reaches a model fed the ids alone.
     */
    tokenizer?: { path: string; vocab: number; pad: string; fits: boolean; maxLength: number; pairs: string };
  };
  /**
   * Tensors the exporter stored once for several uses: `tied`, weights used twice that train as
   * one tensor ([copy, the tensor it reads]); `untied`, how many equal tensors of one value train
   * as separate parameters; `equalParameters`, the parameter that made loading undo every tie.
   */
  ties?: { tied: [string, string][]; untied: number; equalParameters?: string; acrossModules?: string[] };
  /** Ops whose output sizes the input values decide (NonZero…): a training step compiles again for each new set of sizes (src/onnx/data-shapes.ts). */
  dataShaped?: Record<string, number>;
  /** A text decoder exported with a KV cache: what refit trains is the model without it (ops, gradients and groups below). */
  kvCache?: { past: number; useCacheBranch: boolean };
  /** Ifs whose condition graph inputs decide, with the weights their branches hold (trained once those inputs are fixed). */
  controlFlow?: { node: string; inputs: string[]; tensors: number; values: number }[];
  /** What the file computes that its exporter's model did not (an export quirk refit reports and leaves). */
  exportNotes?: string[];
  /** Which `refit train --task` fits the model's inputs and outputs, and how; absent when none is clear. */
  task?: { task: string; how: string };
  groups: { name: string; tensors: number; values: number; trainable: boolean; blockers: GroupBlocker[]; unreached: string[] }[];
  /** Ops that block training, with their nodes and the groups they block. */
  blockers: (GroupBlocker & { groups: string[] })[];
  summary: string[];
}

export async function inspectModel(path: string): Promise<InspectResult> {
  let upgrade: UpgradeReport | null = null;
  let upgradeError: string | undefined;
  let tokens: InspectResult['tokens'];
  let kvCache: InspectResult['kvCache'];
  let ties: InspectResult['ties'];
  let ir: Model;
  let shown: Model; // the graph as given (inputs, outputs); `ir` is what trains
  try {
    const m = await loadModel(path, { onUpgrade: (r) => { upgrade = r; } });
    const kv = kvCacheOf(m);
    const t = kv ? withoutKvCache(m) : m;
    shown = m.ir;
    ir = t.ir;
    const q = m.quirks;
    const params = new Set(m.parameterNames());
    const tied = [...q.tied, ...q.retied].filter(([, w]) => params.has(w)); // a buffer's ties (a causal mask's) train nothing
    // a buffer's copies across modules (a causal mask's) train nothing: not counted
    const untied = q.untied.filter((n) => params.has(n) || !q.untiedAcrossModules?.includes(n));
    if (tied.length || untied.length) ties = { tied, untied: untied.length, ...(q.equalParameters ? { equalParameters: q.equalParameters } : {}), ...(q.untiedAcrossModules?.some((n) => params.has(n)) ? { acrossModules: q.untiedAcrossModules.filter((n) => params.has(n)) } : {}) };
    if (kv) kvCache = { past: kv.past.length, useCacheBranch: kv.useCacheBranch !== undefined };
    const ids = tokenIdsInput(t);
    if (ids) {
      const vocab = vocabularySize(t, ids.name);
      const typed = t.inputs.some((i) => i.name === 'token_type_ids');
      tokens = { ids: ids.name, vocab, companions: t.inputs.filter((i) => i.name !== ids.name && isCompanion(i)).map((i) => i.name), positions: positionTableRows(t), ...tokenizerBeside(path, vocab, typed) };
    }
    await Promise.all([m.release(), t.release()]);
  } catch (e) {
    // A model refit cannot upgrade is still worth a look: show the graph as stored.
    if (!/upgrade|opset/i.test((e as Error).message)) throw e;
    upgradeError = (e as Error).message;
    ir = shown = readModelFile(path);
  }
  const g = ir.graph;
  const d = diagnoseTraining(ir);
  const inputNames = new Set(g.inputs.map((i) => i.name));
  const controlFlow = g.nodes.filter((x) => x.opType === 'If').map((x) => ({ node: x.name, inputs: inputsBehind(g.nodes, inputNames, x.inputs[0]!), ...branchWeights(x) }))
    .filter((c) => c.inputs.length > 0 && c.tensors > 0);
  // The ops that select by value (NonZero …) and the first op on each other path whose size the
  // values decide (a length regulator's Range), not the Reshapes and Expands that follow them.
  const decided = new Set(dataShapedOutputs(g)), after = new Set<string>();
  const shaped = g.nodes.filter((x) => {
    const follows = x.inputs.some((i) => after.has(i));
    const listed = x.outputs.some((o) => decided.has(o)) && (!follows || DATA_SHAPED_OPS.has(x.opType));
    if (listed || follows) for (const o of x.outputs) after.add(o);
    return listed;
  });
  shaped.push(...subgraphDataShapes(g).nodes); // a Loop whose body slices by values fed (an EmbeddingBag)
  const dataShaped = shaped.length ? Object.fromEntries([...new Set(shaped.map((x) => x.opType))].map((op) => [op, shaped.filter((x) => x.opType === op).length])) : undefined;
  const rules = new Set(supportedOps());
  const lowered = new Set(d.lowered.map((l) => l.opType));
  const ops = { differentiable: [] as string[], noGradient: [] as string[], lowered: [] as string[], withoutRule: [] as string[] };
  for (const op of Object.keys(d.opCounts).sort()) {
    if (NO_GRADIENT_OPS.has(op)) ops.noGradient.push(op);
    else if (rules.has(op)) ops.differentiable.push(op);
    else if (lowered.has(op)) ops.lowered.push(op);
    else ops.withoutRule.push(op);
  }
  const size = (p: string) => g.initializers.get(p)?.data.length ?? 0;
  const groups = d.groups.map((gr) => ({
    name: gr.name, tensors: gr.params.length, values: gr.params.reduce((a, p) => a + size(p), 0),
    trainable: gr.trainable, blockers: gr.blockers, unreached: gr.unreached,
  }));
  const vi = (v: ValueInfo) => ({ name: v.name, dtype: v.dtype, shape: v.shape ? [...v.shape] : null });
  const initNames = new Set(shown.graph.initializers.keys());
  const notes = exportNotes(shown);
  return {
    model: path,
    opset: opsetVersion(ir),
    upgrade,
    ...(upgradeError ? { upgradeError } : {}),
    inputs: shown.graph.inputs.filter((i) => !initNames.has(i.name)).map(vi),
    outputs: shown.graph.outputs.map(vi),
    nodes: g.nodes.length,
    opCounts: d.opCounts,
    ops,
    parameters: { tensors: groups.reduce((a, gr) => a + gr.tensors, 0), values: groups.reduce((a, gr) => a + gr.values, 0), quantized: quantizedValues(g) },
    ...(tokens ? { tokens } : {}),
    ...(kvCache ? { kvCache } : {}),
    ...(controlFlow.length ? { controlFlow } : {}),
    ...(ties ? { ties } : {}),
    ...(dataShaped ? { dataShaped } : {}),
    ...(notes.length ? { exportNotes: notes } : {}),
    ...(suggestTask(shown, tokens) ?? {}),
    groups,
    blockers: d.unsupportedOps.map(({ opType, domain, nodes, reason, groups: gs }) => ({ opType, domain, nodes, ...(reason ? { reason } : {}), groups: gs })),
    summary: d.summary,
  };
}

/** What the file's exporter or optimizer did that a user should know before training it. */
function exportNotes(m: Model): string[] {
  return [...roiAlignNote(m), ...packedAttentionNote(m), ...computedWeightNote(m)];
}

/** Layers whose weight the graph computes (weight standardization, weight norm): LoRA's sites only, where they are convs (src/peft/sites.ts). */
function computedWeightNote(m: Model): string[] {
  const nodes = computedWeightNodes(m.graph);
  if (!nodes.length) return [];
  const ops = [...new Set(nodes.map((n) => n.opType))].join('/');
  return [`${nodes.length} ${ops} layer${nodes.length > 1 ? 's' : ''} compute${nodes.length > 1 ? '' : 's'} the weight in the graph from parameters (weight standardization, as BiT's and NFNet's StdConv2d, or weight norm): full training trains the stored parameters behind them; LoRA attaches to such convolutions as a branch (merging bakes it into the graph), the other adapters only to layers with a stored weight`];
}

/** onnxruntime's transformer optimizer packs Q, K and V into com.microsoft Attention (as LoRA's target errors say: src/peft/sites.ts). */
function packedAttentionNote(m: Model): string[] {
  const packed = packedAttentionNodes(m.graph);
  if (!packed.length) return [];
  return [`${packed.length} com.microsoft Attention node${packed.length > 1 ? 's' : ''} pack${packed.length > 1 ? '' : 's'} the query, key and value projections into one weight (onnxruntime's transformer optimizer): full training trains that weight, adapters attach only to the other layers; for LoRA on query/value, adapt the model as exported before that optimization`];
}

/**
 * torchvision 0.14 and older register roi_align's ONNX symbolic for opset 11 only; exported at 16
 * or later, the RoiAlign has no coordinate_transformation_mode, which there means half_pixel, while
 * torchvision's detection heads pool with aligned=False (output_half_pixel): every box is read half
 * a pixel off. Newer torchvision writes the attribute.
 */
function roiAlignNote(m: Model): string[] {
  if (m.producerName !== 'pytorch' || opsetVersion(m) < 16) return [];
  const roi = m.graph.nodes.filter((x) => x.opType === 'RoiAlign' && !x.attrs.coordinate_transformation_mode);
  if (!roi.length) return [];
  return [`${roi.length} RoiAlign node${roi.length > 1 ? 's' : ''} ('${roi[0]!.name}'${roi.length > 1 ? ', …' : ''}) ${roi.length > 1 ? 'have' : 'has'} no coordinate_transformation_mode, which at opset ${opsetVersion(m)} means half_pixel; torchvision 0.14 and older export roi_align so for aligned=False (its detection heads), so this file may pool every box half a pixel off from the PyTorch model. refit trains the file as it computes; export at opset 11, or set the attribute to output_half_pixel, to match PyTorch`];
}

/** The training task the CLI would use for a model of these inputs and outputs (a hint for the reader). */
function suggestTask(m: Model, tokens: InspectResult['tokens']): { task: { task: string; how: string } } | undefined {
  const outs = m.graph.outputs;
  const rank = (o: ValueInfo) => o.shape?.length ?? 0;
  const pick = (task: string, how: string) => ({ task: { task, how } });
  if (m.graph.inputs.some((i) => i.name === 'decoder_input_ids') && !m.graph.inputs.some((i) => i.name === 'encoder_hidden_states')) return pick('seq2seq', 'an encoder-decoder in one file: `refit train <this file> --task seq2seq --data <source ids> --labels <target ids> --decoder-start <id>`');
  if (m.graph.inputs.some((i) => i.name === 'encoder_hidden_states')) return pick('seq2seq', "the decoder of an encoder-decoder: `refit train <encoder> --decoder <this file> --task seq2seq --data <source ids> --labels <target ids>`");
  const hidden = outs.find((o) => ['last_hidden_state', 'sentence_embedding', 'token_embeddings'].includes(o.name));
  if (tokens && hidden && !outs.some((o) => o.name === 'logits')) return pick('pairs', "an embedding model: `--task pairs --data <[examples, 2 or more, length] ids>` (or, as the encoder of a seq2seq pair, `--task seq2seq --decoder <decoder>`)");
  if (hidden && !tokens && !outs.some((o) => o.name === 'logits')) return pick('seq2seq', "an encoder of features (Whisper-style): `--task seq2seq --decoder <decoder> --data <features .npy> --labels <target ids>`");
  // The CLI feeds one float input (token models get their companions made): a diffusion U-Net's
  // sample and timestep are the library's to feed.
  if (!tokens && m.graph.inputs.length > 1) return undefined;
  // A detector's boxes, scores and labels (torchvision's exports): no CLI task trains one.
  if (outs.some((o) => /^(pred_)?boxes$|^bboxes$/i.test(o.name))) return undefined;
  const logits = outs.find((o) => o.name === 'logits') ?? outs[0];
  if (!logits) return undefined;
  // [batch, sequence, classes]: a language model when the classes are the vocabulary, else a tagger
  const classes = rank(logits) === 3 ? logits.shape![2] : undefined;
  if (tokens && rank(logits) === 3 && typeof classes === 'number' && tokens.vocab !== null && classes !== tokens.vocab) {
    return pick('tag', '`--task tag --data <[sequences, length] ids> --labels <[sequences, length] class ids, -100 where none>` (a token classifier: named entities, parts of speech)');
  }
  if (tokens && rank(logits) === 3) return pick('next-token', '`--task next-token --data <[sequences, length] ids>` (a language model)');
  if (rank(logits) === 2) return pick('classify', tokens ? '`--data <ids .npy> --labels <one per sequence>` (a sequence classifier)' : '`--data <samples> --labels <one per sample>` (the default task)');
  // An image in: a map of values at its size (a depth estimator's [N, H, W], a denoiser's image)
  // is a regression; another [N, C, positions] output is a detector (YOLO's [N, 4 + classes,
  // anchors]), not a recogniser.
  const image = m.graph.inputs.length === 1 && m.graph.inputs[0]!.shape?.length === 4 ? m.graph.inputs[0]!.shape : null;
  const same = (a: readonly (string | number | null)[], b: readonly (string | number | null)[]) => a.length === b.length && a.every((d, i) => d !== null && d === b[i]);
  if (!tokens && image && logits.shape && ((rank(logits) === 3 && same(logits.shape.slice(1), image.slice(2))) || (rank(logits) === 4 && same(logits.shape.slice(1), image.slice(1))))) {
    return pick('regress', "values at the input's size (a depth map, a restored image): `--task regress --data <images> --labels <float .npy of targets [N, ...] of the output's shape>`");
  }
  // One channel out (no per-pixel classes: cross-entropy over one class is 0), or the input's
  // channels at a whole multiple of its size: an upscaler's image (ESPCN, Real-ESRGAN).
  const scaled = (o: readonly (string | number | null)[], i: readonly (string | number | null)[]) => o.slice(2).every((d, k) => typeof d === 'number' && typeof i[k + 2] === 'number' && d > (i[k + 2] as number) && d % (i[k + 2] as number) === 0);
  if (!tokens && image && logits.shape && rank(logits) === 4 && (logits.shape[1] === 1 || (logits.shape[1] === image[1] && scaled(logits.shape, image)))) {
    return pick('regress', "an image out (one channel, or the input's channels at a multiple of its size: an upscaler): `--task regress --data <images> --labels <float .npy of targets [N, ...] of the output's shape>`");
  }
  // [N, frames, classes] with the frames free and the classes fixed: a text-line recogniser (CRNN,
  // PaddleOCR's SVTR: frames along the image's width), not a detector's [N, 4 + classes, anchors].
  if (!tokens && rank(logits) === 3 && image && typeof logits.shape![2] === 'number' && typeof logits.shape![1] !== 'number') {
    return pick('ctc', '`--task ctc --data <PaddleOCR label file: image path<TAB>transcript a line> --vocab <its character dictionary, e.g. ppocr_keys_v1.txt>`, or `--data <text-line images .npy [n, C, H, W]> --labels <[n, length] label ids, -100 after each row>` (a text recogniser: frame classes [N, frames, classes] along the width, class 0 the blank unless --pad-token says; a final Softmax is read through to its logits)');
  }
  if (!tokens && rank(logits) === 3 && image) return pick('none', "no `refit train` task fits a detector's [N, 4 + classes, anchors] output: `refit adapt --method bn-adapt --out adapted.npy` adapts its normalization statistics (`--method actmad --source <clean images>` its weights too) and writes the adapted outputs; the library trains it with a loss of your own");
  // [N, 1, samples]: a vocoder's waveform or another one-channel signal, not frame logits
  if (!tokens && rank(logits) === 3 && logits.shape![1] === 1) return pick('regress', "a one-channel signal (a vocoder's waveform): `--task regress --data <inputs .npy> --labels <float .npy of targets [N, 1, samples]>` (`--loss l1` as vocoders train)");
  if (!tokens && rank(logits) === 3) return pick('ctc', '`--task ctc --data <audio or features .npy> --labels <[N, length] label sequences, -100 after each row>` (a speech recogniser: frame logits [N, frames, classes], class 0 the blank unless --pad-token says)');
  if (!tokens && rank(logits) === 4) return pick('segment', '`--task segment --data <images> --labels <[N, H, W] masks .npy>` (per-pixel classes on axis 1)');
  return undefined;
}

const fmtShape = (s: (number | string | null)[] | null) => (s ? `[${s.map((d) => d ?? '?').join(', ')}]` : '(unknown shape)');
const n = (v: number) => v.toLocaleString('en-US');
const opName = (b: { domain: string; opType: string }) => (b.domain ? `${b.domain}:${b.opType}` : b.opType);
const list = (xs: string[], max = 8) => xs.slice(0, max).map((x) => `'${x}'`).join(', ') + (xs.length > max ? `, … (${xs.length} in all)` : '');

function formatTies(t: NonNullable<InspectResult['ties']>): string {
  const parts: string[] = [];
  if (t.equalParameters) parts.push(`none kept: '${t.equalParameters}' is a parameter of its own equal to another (an untrained model with copied layers?), so each copy trains on its own`);
  if (t.tied.length) parts.push(`${t.tied.length} ${t.tied.length === 1 ? 'copy reads' : 'copies read'} a weight stored once and ${t.tied.length === 1 ? 'trains' : 'train'} with it as one tensor (${t.tied.slice(0, 3).map(([c, w]) => `'${c}' → '${w}'`).join(', ')}${t.tied.length > 3 ? ', …' : ''}; --untie trains each copy)`);
  const across = t.acrossModules?.length ?? 0, uniformOnes = t.untied - across;
  if (uniformOnes) parts.push(`${uniformOnes} equal ${uniformOnes === 1 ? 'tensor' : 'tensors'}${t.equalParameters ? '' : ' of one value (fresh ones and zeros)'} ${uniformOnes === 1 ? 'is a parameter' : 'are parameters'} of ${uniformOnes === 1 ? 'its' : 'their'} own`);
  if (across) parts.push(`${across} equal ${across === 1 ? 'copy' : 'copies'} of a weight read by another module (${t.acrossModules!.slice(0, 3).map((c) => `'${c}'`).join(', ')}${across > 3 ? ', …' : ''}) ${across === 1 ? 'trains' : 'train'} on ${across === 1 ? 'its' : 'their'} own, as copied layers of an untrained model would; if the modules share that weight (TabNet's shared GLU layers), train with --keep-ties`);
  return parts.join('; ');
}

export function formatInspect(r: InspectResult): string {
  const out: string[] = [r.model];
  const up = r.upgrade;
  out.push(`  opset:      ${r.opset}${up ? ` (upgraded on load from ${up.from} to ${up.to}; verified on ${up.verifiedOn})` : ''}`);
  if (r.upgradeError) out.push(`  upgrade:    failed (${r.upgradeError}); shown as stored`);
  for (const note of [...up?.notes ?? [], ...r.exportNotes ?? []]) out.push(`  note:       ${note}`);
  for (const i of r.inputs) out.push(`  input:      ${i.name} ${i.dtype} ${fmtShape(i.shape)}`);
  for (const o of r.outputs) out.push(`  output:     ${o.name} ${o.dtype} ${fmtShape(o.shape)}`);
  if (r.tokens) out.push(`  token ids:  '${r.tokens.ids}'${r.tokens.vocab !== null ? ` (vocabulary ${n(r.tokens.vocab)})` : ''}, from a .npy of ids${r.tokens.tokenizer ? ' or text' : ''}${r.tokens.companions.length ? `; refit makes ${r.tokens.companions.join(', ')} from them (--pad-token: the padding id)` : ''}`);
  const tk = r.tokens?.tokenizer;
  if (tk) {
    const p = r.tokens!.positions;
    const length = p !== null && p < tk.maxLength ? `sequences cut to ${n(p)} tokens, the model's position table (the tokenizer says ${n(tk.maxLength)})` : `sequences cut to ${n(tk.maxLength)} tokens`;
    out.push(`  tokenizer:  ${tk.path} (${n(tk.vocab)} tokens; ${tk.pad}; ${length}; ${tk.pairs})${tk.fits ? ': train, eval, adapt and serve take text files and texts' : `: WARNING its ids run past the model's ${n(r.tokens!.vocab!)}-row embedding; is it the model's own?`}`);
  }
  if (r.task) out.push(`  task:       ${r.task.task}: ${r.task.how}`);
  if (r.kvCache) out.push(`  KV cache:   ${r.kvCache.past} past inputs${r.kvCache.useCacheBranch ? ' and use_cache_branch (optimum\'s merged decoder)' : ''}; refit trains the model without it (empty pasts${r.kvCache.useCacheBranch ? ', the uncached branch inlined' : ''}), as analysed below`);
  out.push(`  parameters: ${n(r.parameters.values)} values in ${r.parameters.tensors} tensors${r.parameters.quantized ? `, and ${n(r.parameters.quantized)} weight values stored quantized (frozen; adapters train on them)` : ''}`);
  for (const c of r.controlFlow ?? []) {
    out.push(`  control:    If '${c.node}' on input${c.inputs.length > 1 ? 's' : ''} ${list(c.inputs)} holds ${n(c.values)} weight values in ${c.tensors} tensors in its branches, counted above only once a branch is chosen: fix ${c.inputs.length > 1 ? 'those inputs' : 'that input'} to train them (library: withFixedInputs(model, { ${c.inputs[0]}: … }))`);
  }
  if (r.ties) out.push(`  ties:       ${formatTies(r.ties)}`);
  if (r.dataShaped) out.push(`  data sizes: ${Object.entries(r.dataShaped).map(([op, k]) => `${op} ×${k}`).join(', ')} give sizes the input values decide (an expert's tokens, a graph's edges, a length regulator's frames, an EmbeddingBag's bags): a training step is compiled again for each new set of sizes`);
  const counts = Object.entries(r.opCounts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  out.push(`  ops:        ${r.nodes} nodes: ${counts.map(([k, v]) => `${k} ×${v}`).join(', ')}`);
  out.push(`  gradients:  ${r.ops.differentiable.length} op types with rules${r.ops.lowered.length ? `, ${r.ops.lowered.join(', ')} by lowering` : ''}${r.ops.noGradient.length ? `, ${r.ops.noGradient.length} carry no gradient (${r.ops.noGradient.join(', ')})` : ''}`);
  if (r.ops.withoutRule.length) {
    // An op without a rule matters only between a parameter and an output (then it is a blocker below).
    const blocking = new Set(r.blockers.map((b) => b.opType));
    const idle = r.ops.withoutRule.filter((op) => !blocking.has(op));
    out.push(`              without a rule: ${r.ops.withoutRule.join(', ')}${idle.length ? ` (${idle.length === r.ops.withoutRule.length ? 'none' : idle.join(', ')} between a parameter and an output: nothing to differentiate there)` : ''}`);
  }
  out.push('  parameter groups:');
  for (const gr of r.groups) {
    const head = `    ${gr.name.padEnd(20)} ${String(gr.tensors).padStart(4)} tensors ${n(gr.values).padStart(11)} values  `;
    if (gr.trainable && gr.unreached.length === 0) out.push(`${head}trainable`);
    else {
      const why = gr.blockers.map((b) => `${opName(b)}${b.reason ? ` (${b.reason})` : ''} at ${list(b.nodes, 4)}`);
      if (gr.unreached.length) why.push(`${gr.unreached.length} not reaching any output (${list(gr.unreached, 3)})`);
      out.push(`${head}${gr.trainable ? 'trainable, but ' : 'blocked by '}${why.join('; ')}`);
    }
  }
  if (r.blockers.length) {
    out.push('  what blocks training:');
    for (const b of r.blockers) out.push(`    ${opName(b)}: no gradient rule${b.reason ? ` for this form (${b.reason})` : ''}; nodes ${list(b.nodes)}; blocks ${b.groups.join(', ')}`);
  } else out.push(`  every parameter group can train`);
  return out.join('\n');
}

/** The tokenizer.json beside the model or one folder up, if any and readable: its size and pad, and whether its ids fit the embedding. */
function tokenizerBeside(modelPath: string, vocab: number | null, typed: boolean): { tokenizer?: NonNullable<InspectResult['tokens']>['tokenizer'] } {
  const enc = (() => { try { return textEncoder({ modelPath }); } catch { return null; } })();
  if (!enc) return {};
  const size = enc.vocabSize, s = enc.segments;
  const pairs = !typed || !s.marked ? 'text pairs as one sequence'
    : s.separator !== undefined ? `text pairs: token_type_ids 1 after the first separator (id ${s.separator})`
      : 'text pairs refused: the tokenizer marks the second segment without a separator, which refit cannot rebuild from the ids';
  return { tokenizer: { path: enc.path, vocab: size, pad: enc.padSaid, fits: vocab === null || size <= vocab, maxLength: enc.maxLength, pairs } };
}
