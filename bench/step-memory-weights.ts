// Factor 5 of bench/results/step-memory.md: what onnxruntime's session creation adds to RSS for
// ResNet-18 64's Tent step (43 MB of baked weights), per session option; one process per option:
//   for o in all noprepack devalloc extended basic; do node --expose-gc --import tsx bench/step-memory-weights.ts $o; done
// all: level 'all' (refit's default); noprepack: session.disable_prepacking; devalloc:
// session.use_device_allocator_for_initializers; extended / basic: lower optimisation levels.
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { ort, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
const opt = process.argv[2]!;
const rss = () => Math.round(process.memoryUsage.rss() / 1048576);
const peak = () => Math.round(process.resourceUsage().maxRSS / 1024);
const model = await loadModel('tmp/foreign-models/resnet18_64.onnx', { threads: 2 });
const bn = new Set<string>();
for (const n of model.ir.graph.nodes) if (n.opType === 'BatchNormalization') { bn.add(n.inputs[1]!); bn.add(n.inputs[2]!); }
const step = model.compileTrainStep({ trainable: (n: string) => bn.has(n), loss: losses.softmaxEntropy({ logits: 'logits' }), outputs: ['logits'], batchNorm: 'train' } as never);
const dims = [64, 3, 64, 64];
const graph = (await import('../src/train/step-graph.ts')).buildStepGraph;
const g = await graph(model.ir, { x: { dtype: 'float32', dims } }, (step as any).options);
let bytes: Uint8Array | null = encodeModel(g.model);
(globalThis as any).gc?.();
const r0 = rss(), p0 = peak();
const session: Record<string, string> = { 'session.intra_op.allow_spinning': '0' };
const o: any = { graphOptimizationLevel: ['basic', 'extended', 'disabled'].includes(opt) ? opt : 'all', executionProviders: ['cpu'], intraOpNumThreads: 2, enableMemPattern: false };
if (opt === 'devalloc') session['session.use_device_allocator_for_initializers'] = '1';
if (opt === 'noprepack') session['session.disable_prepacking'] = '1';
o.extra = { session };
const s = await ort.InferenceSession.create(bytes, o);
bytes = null; (globalThis as any).gc?.();
const r1 = rss(), p1 = peak();
const feeds: Record<string, any> = { x: toOrt(f32(dims, new Float32Array(64 * 3 * 64 * 64).map((_, i) => Math.sin(i)))) };
for (const p of g.paramInputs) feeds[p] = toOrt(model.param(p));
let t = performance.now(); await s.run(feeds); const first = performance.now() - t;
t = performance.now(); await s.run(feeds); const second = performance.now() - t;
await s.run(feeds);
console.log(JSON.stringify({ opt, before_create: r0, peak_before: p0, created: r1, peak_create: p1, after_runs: rss(), peak: peak(), first_ms: Math.round(first), second_ms: Math.round(second) }));
