// Session forms of ResNet's Tent step, for the memory pass of session 6 (docs/speed.md): one
// onnxruntime session per form, built from the same step graph, RSS (after a GC) before and after
// creating them, peak RSS (VmHWM) after the runs, median ms per form and, with two forms, the median
// per-round time ratio (second / first, alternating call by call) and the largest relative output gap.
//
//   node --expose-gc --import tsx bench/step-memory-session-forms.ts <forms> [resnet18_64|resnet18_224] [rounds]
//   forms, comma-separated (memory: one form per process; time: two forms in one process):
//     bytes      every initializer inside the model bytes (refit before this pass)
//     base       bytes, after refit's blocked-conv pass for fed convs (as TrainStep builds it)
//     ext        initializers >= 1 kB as in-memory external data (SessionOptions.externalData)
//     noprepack  bytes with session.disable_prepacking
//     fed        the frozen weights (>= 64 kB, not the dense matrices) fed as graph inputs, blocked-conv pass over them
//     noarena    base with onnxruntime's CPU arena off
//     devalloc   base with session.use_device_allocator_for_initializers
//     save       bytes, writing onnxruntime's optimised graph to /tmp/opt-step.onnx (its initializers)
import onnxProto from 'onnx-proto';
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { ort, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { cloneModel } from '../src/onnx/ir.ts';
import { readFileSync } from 'node:fs';
const { onnx } = onnxProto;
const mode = process.argv[2]!;
const cfgname = process.argv[3] ?? 'resnet18_64';
const st = () => readFileSync('/proc/self/status', 'utf8');
const f = (k: string) => Math.round(Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st())![1]) / 1024);
const gc = () => (globalThis as any).gc?.();
const model = await loadModel(`tmp/foreign-models/${cfgname}.onnx`, { threads: 2 });
const bn = new Set<string>();
for (const n of model.ir.graph.nodes) if (n.opType === 'BatchNormalization') { bn.add(n.inputs[1]!); bn.add(n.inputs[2]!); }
const step = model.compileTrainStep({ trainable: (n: string) => bn.has(n), loss: losses.softmaxEntropy({ logits: 'logits' }), outputs: ['logits'], batchNorm: 'train' } as never);
const dims = cfgname === 'resnet18_64' ? [64, 3, 64, 64] : [16, 3, 224, 224];
const { buildStepGraph } = await import('../src/train/step-graph.ts');
const { stepSource } = await import('../src/train/step-opset.ts');
const { denseTinyConvs } = await import('../src/train/tiny-conv-dense.ts');
const sig = { x: { dtype: 'float32' as const, dims } };
const fed = new Set((step as any).fed as Set<string>);
// NODENSE=1: without the dense layer4 form (src/train/tiny-conv-dense.ts).
const src = process.env.NODENSE ? stepSource(model.ir).model : denseTinyConvs(stepSource(model.ir).model, sig, (t) => !fed.has(t)).model;
const g = await buildStepGraph(src, sig, (step as any).options);
const o: any = { graphOptimizationLevel: 'all', executionProviders: ['cpu'], intraOpNumThreads: 2, interOpNumThreads: 1, enableMemPattern: false, extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } };
const movedFeeds: Record<string, any> = {};
async function make(m: string) {
  if (m === 'fed') {
    const { blockFedConvsForSession } = await import('../src/onnx/nchwc.ts');
    const fs = cloneModel(g.model);
    const moved: string[] = [];
    for (const [n, t] of fs.graph.initializers) if (t.data.byteLength >= 65536 && !n.endsWith('_dense') && model.ir.graph.initializers.has(n)) { moved.push(n); fs.graph.initializers.delete(n); fs.graph.inputs.push({ name: n, dtype: t.dtype, shape: [...t.dims] }); movedFeeds[n] = toOrt(t); }
    await blockFedConvsForSession(fs, new Set([...g.paramInputs, ...moved]), {});
    return ort.InferenceSession.create(encodeModel(fs), o);
  }
  if (m === 'devalloc') {
    const { blockFedConvsForSession } = await import('../src/onnx/nchwc.ts');
    const fs = cloneModel(g.model);
    await blockFedConvsForSession(fs, new Set(g.paramInputs), {});
    return ort.InferenceSession.create(encodeModel(fs), { ...o, extra: { session: { ...o.extra.session, use_device_allocator_for_initializers: '1' } } });
  }
  if (m === 'noarena' || m === 'base') {
    if (m === 'noarena') o.enableCpuMemArena = false; else delete o.enableCpuMemArena;
    const { blockFedConvsForSession } = await import('../src/onnx/nchwc.ts');
    const fs = cloneModel(g.model);
    await blockFedConvsForSession(fs, new Set(g.paramInputs), {});
    return ort.InferenceSession.create(encodeModel(fs), o);
  }
  if (m === 'save') return ort.InferenceSession.create(encodeModel(g.model), { ...o, optimizedModelFilePath: '/tmp/opt-step.onnx' });
  if (m === 'noprepack') return ort.InferenceSession.create(encodeModel(g.model), { ...o, extra: { session: { ...o.extra.session, disable_prepacking: '1' } } });
  if (m === 'bytes') return ort.InferenceSession.create(encodeModel(g.model), o);
  // external: big initializers out of the proto, handed over as in-memory files
  const slim = cloneModel(g.model);
  const ext: { name: string; t: any }[] = [];
  for (const [n, t] of slim.graph.initializers) if (t.data.byteLength >= 1024) { ext.push({ name: n, t }); slim.graph.initializers.delete(n); }
  const p = onnx.ModelProto.decode(encodeModel(slim));
  const files: { path: string; data: Uint8Array }[] = [];
  ext.forEach(({ name, t }, i) => {
    const path = `w${i}.bin`;
    p.graph!.initializer!.push(onnx.TensorProto.create({ name, dataType: 1, dims: t.dims, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL, externalData: [{ key: 'location', value: path }, { key: 'offset', value: '0' }, { key: 'length', value: String(t.data.byteLength) }] }));
    files.push({ path, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) });
  });
  const bytes = onnx.ModelProto.encode(p).finish();
  return ort.InferenceSession.create(bytes, { ...o, externalData: files });
}
const feeds: Record<string, any> = { x: toOrt(f32(dims, new Float32Array(dims.reduce((a, b) => a * b)).map((_, i) => Math.sin(i)))) };
for (const p of g.paramInputs) feeds[p] = toOrt(model.param(p));
const modes = mode.split(',');
gc(); const r0 = f('VmRSS');
const sessions: any[] = [];
for (const m of modes) sessions.push(await make(m));
gc(); const r1 = f('VmRSS');
const outs: any[] = [];
const times: number[][] = modes.map(() => []);
for (let k = 0; k < Number(process.argv[4] ?? 3); k++) for (let i = 0; i < modes.length; i++) { const t = performance.now(); outs[i] = await sessions[i].run(modes[i] === 'fed' ? { ...feeds, ...Object.fromEntries(Object.entries(movedFeeds).filter(([k]) => sessions[i].inputNames.includes(k))) } : feeds); times[i]!.push(performance.now() - t); }
let maxd = 0;
if (outs.length > 1) for (const k of Object.keys(outs[0])) { const a = outs[0][k].data, b = outs[1][k].data; for (let i = 0; i < a.length; i++) maxd = Math.max(maxd, Math.abs(a[i] - b[i]) / (Math.abs(a[i]) + 1e-6)); }
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(JSON.stringify({ modes, before_create: r0, after_create: r1, rss: f('VmRSS'), peak: f('VmHWM'), maxRelDiff: maxd, med: times.map(med), ratios: modes.length > 1 ? med(times[1]!.map((t, i) => t / times[0]![i]!)) : undefined }));
