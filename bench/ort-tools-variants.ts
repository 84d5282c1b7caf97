// The files transformers.js and optimum users download: transformers' own classes (bench/arch_hf.py)
// after onnxruntime's transformer optimizer (Attention, EmbedLayerNormalization,
// SkipLayerNormalization, BiasGelu, FastGelu …) and after its dynamic int8 quantizer
// (DynamicQuantizeLinear + MatMulInteger), and in float16 (its float16 tool, float32 inputs and
// outputs kept: transformers.js's model_fp16.onnx), written by onnxruntime's own Python tools
// (bench/ort_tools_variants.py). For each:
// - fused: refit's full step against PyTorch's loss and gradients (PyTorch's gradients of the
//   weights the optimizer concatenated, Q|K|V, concatenated the same way by ort_tools_variants.py);
// - float16: the full step on a float32 master copy (upcastFloat16) against PyTorch's float32
//   loss and gradients (the weights' rounding to float16 bounds the agreement), and LoRA on the
//   float16 base as below;
// - int8: LoRA on the quantized base (PEFT's default targets), 10 Adam steps on one batch: the
//   loss must fall; and the fused file's LoRA the same way.
//
//   npx tsx bench/ort-tools-variants.ts [--only hf_bert,hf_gpt2] [--out bench/results/ort-tools-variants]
//
// Needs the exports (bench/popular_architectures.py --only …) and the variants
// (PYTHONPATH=tmp/pypi/ortnp /usr/bin/python3 bench/ort_tools_variants.py --dir tmp/popular-architectures)
// in tmp/popular-architectures.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, RefitModel } from '../src/model.ts';
import { upcastFloat16 } from '../src/autodiff/lower/float16.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import * as peft from '../src/peft/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import type { Tensor } from '../src/onnx/tensor.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { savedTensor, compareGrads } from './parity.ts';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(resolve(here, '..'), 'tmp', 'popular-architectures');

const CASES: Record<string, { loss: LossSpec; lora: RegExp }> = {
  hf_bert: { loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), lora: /(query|value)$/ },
  hf_distilbert: { loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), lora: /(q_lin|v_lin)$/ },
  hf_roberta: { loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), lora: /(query|value)$/ },
  hf_gpt2: { loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }), lora: /c_attn$/ },
  hf_vit: { loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), lora: /(query|value)$/ },
  hf_bart: { loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }), lora: /(q_proj|v_proj)$/ },
  hf_t5: { loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }), lora: /\.(q|v)$/ },
  hf_minilm_l6: { loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), lora: /(query|value)$/ },
};

/** PyTorch's gradients saved by a bench script, by name. */
const torchGrads = (file: string) => new Map([...parseSafetensors(readFileSync(join(dir, file))).tensors].map(([k, t]) => [k, t.data as Float32Array]));
/** An error's first line, shortened for a table cell. */
const firstLine = (e: unknown, n = 160) => (e as Error).message.split('\n')[0]!.slice(0, n);
/** 10 Adam steps of LoRA (rank 4) on one batch: first and last loss. */
async function loraSteps(model: RefitModel, c: (typeof CASES)[string], feeds: Record<string, Tensor>): Promise<string> {
  const m = peft.withAdapter(model, 'ad', peft.lora({ rank: 4, alpha: 8, targets: c.lora }));
  const t = new Trainer(m.compileTrainStep({ trainable: m.trainableNames(), loss: c.loss }), optim.adam({ lr: 1e-2 }));
  const first = (await t.step(feeds)).loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = (await t.step(feeds)).loss;
  const sites = m.trainableNames().filter((n) => n.includes('lora_A')).length;
  await m.release();
  return `${sites} sites, loss ${first.toFixed(4)} → ${last.toFixed(4)}${last < first ? '' : ' ✗ did not fall'}`;
}

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const names = arg('only', Object.keys(CASES).join(',')).split(',');
const out = arg('out', join(here, 'results', 'ort-tools-variants'));
const rows: Record<string, unknown>[] = [];
for (const name of names) {
  const c = CASES[name]!;
  if (!existsSync(join(dir, `${name}.fused.onnx`))) throw new Error(`${name}: no variants in ${dir}: run bench/ort_tools_variants.py first (see the header)`);
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { loss: number; inputs: Record<string, number[]> };
  const info = JSON.parse(readFileSync(join(dir, `${name}.variants.json`), 'utf8')) as { fused_stats: Record<string, number>; int8: Record<string, number> };
  const feeds: Record<string, Tensor> = {};
  for (const k of [...Object.keys(ref.inputs), 'y']) feeds[k] = savedTensor(dir, `${name}.${k}.npy`);
  // PyTorch's gradients under the fused file's names (ort_tools_variants.py: packed Q|K|V concatenated)
  const grads = torchGrads(`${name}.fused.grads.safetensors`);
  const fused = await loadModel(join(dir, `${name}.fused.onnx`), { threads: 2 });
  const row: Record<string, unknown> = { model: name, fusions: Object.entries(info.fused_stats).filter(([, n]) => n).map(([k, n]) => `${k} ×${n}`).join(', ') };
  try {
    const r = await fused.compileTrainStep({ trainable: 'all', loss: c.loss }).run(feeds);
    const unmatched = fused.parameterNames().filter((p) => !grads.has(p));
    const { compared, worst } = compareGrads(r.grads, grads);
    Object.assign(row, { fusedLoss: r.loss, torchLoss: ref.loss, compared, unmatched, worstGrad: worst });
  } catch (e) { row.fusedError = firstLine(e, 200); }
  try { row.fusedLora = await loraSteps(fused, c, feeds); } catch (e) { row.fusedLora = `✗ ${firstLine(e)}`; }
  // float16 (transformers.js's model_fp16.onnx): PyTorch's float32 gradients under the original
  // names; the weights' rounding to float16 bounds how close they can be
  const fp16 = await loadModel(join(dir, `${name}.fp16.onnx`), { threads: 2 });
  try {
    // every parameter trains as a float32 master copy (refit refuses float16 trainables and names this way)
    const master = new RefitModel(upcastFloat16(fp16.ir), fp16.sessionOptions);
    const r = await master.compileTrainStep({ trainable: 'all', loss: c.loss }).run(feeds);
    await master.release();
    Object.assign(row, { fp16Loss: r.loss, fp16WorstGrad: compareGrads(r.grads, torchGrads(`${name}.grads.safetensors`)).worst });
  } catch (e) { row.fp16Error = firstLine(e, 200); }
  try { row.fp16Lora = await loraSteps(fp16, c, feeds); } catch (e) { row.fp16Lora = `✗ ${firstLine(e)}`; }
  await fp16.release();
  const int8 = await loadModel(join(dir, `${name}.int8.onnx`), { threads: 2 });
  row.int8Ops = Object.entries(info.int8).filter(([k]) => /Integer|Quantize/.test(k)).map(([k, n]) => `${k} ×${n}`).join(', ');
  try { row.int8Lora = await loraSteps(int8, c, feeds); } catch (e) { row.int8Lora = `✗ ${firstLine(e)}`; }
  for (const m of [fused, int8]) await m.release();
  rows.push(row);
  console.log(JSON.stringify(row));
}
const f = (v: unknown, d = 5) => (typeof v === 'number' ? (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(1) : v.toFixed(d)) : String(v ?? ''));
const lines = [`# onnxruntime's optimizer and quantizer outputs of transformers' own classes (${new Date().toISOString()})`, '',
  `\`npx tsx bench/ort-tools-variants.ts ${process.argv.slice(2).join(' ')}\`: bench/arch_hf.py's exports after onnxruntime 1.30's \`optimizer.optimize_model(model_type, opt_level=1)\` (fused) and \`quantize_dynamic(weight_type=QInt8)\` (int8) and \`float16.convert_float_to_float16(keep_io_types=True)\` (float16), bench/ort_tools_variants.py. Fused: refit's full step against PyTorch's loss and gradients (concatenated Q|K|V weights against PyTorch's gradients concatenated the same way; gradients of norm < 1e-6 counted as compared, left out of the worst). LoRA (rank 4, PEFT's default targets): 10 Adam steps (lr 1e-2) on the one batch. 2 threads.`, '',
  '| model | fusions | fused: loss refit / PyTorch | gradients compared (unmatched) | worst gradient relative error | fused: LoRA | float16: loss, worst gradient | float16: LoRA | int8 ops | int8: LoRA |', '|---|---|---|---|---:|---|---|---|---|---|'];
for (const r of rows) lines.push(`| ${r.model} | ${r.fusions} | ${r.fusedError ? `✗ ${r.fusedError}` : `${f(r.fusedLoss)} / ${f(r.torchLoss)}`} | ${r.compared ?? ''} (${(r.unmatched as string[] | undefined)?.join(', ') || 'none'}) | ${f(r.worstGrad)} | ${r.fusedLora} | ${r.fp16Error ? `✗ ${r.fp16Error}` : `${f(r.fp16Loss)}, ${f(r.fp16WorstGrad)}`} | ${r.fp16Lora} | ${r.int8Ops} | ${r.int8Lora} |`);
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rows }, null, 1));
console.log(`wrote ${out}.md and .json`);
