// onnxruntime's profile of one BN-adapt graph (src/tta/bn-adapt.ts batchStatModel) on a foreign
// CNN (tmp/foreign-models), in the standard or the blocked form: kernel ms per call by op type and,
// with --nodes K, the K slowest nodes. 2 threads, 2 warm-up runs, 5 profiled runs.
//
//   npx tsx bench/bn-adapt-profile.ts <model> <standard|blocked> <batch> <C> <H> <W> [--nodes 20] [--no-pointwise]
//   e.g. npx tsx bench/bn-adapt-profile.ts mobilenet_v2_224 blocked 16 3 224 224
import { readFileSync, readdirSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/model.ts';
import { batchStatModel, bnAdaptForm } from '../src/tta/bn-adapt.ts';
import { pointwiseStats } from '../src/onnx/nchwc-batchstats.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { ort, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile } from './stats.ts';

const argv = process.argv.slice(2);
const [name, form, ...dimArgs] = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--nodes');
const nodes = argv.includes('--nodes') ? Number(argv[argv.indexOf('--nodes') + 1]) : 0;
const dims = dimArgs.slice(0, 4).map(Number);
const model = await loadModel(`tmp/foreign-models/${name}.onnx`, { threads: 2 });
const x = f32(dims, new Rng(1).fill(new Float32Array(dims.reduce((a, b) => a * b, 1)), 1));
bnAdaptForm.current = form as 'standard' | 'blocked';
pointwiseStats.current = !argv.includes('--no-pointwise');
const v = await batchStatModel(model, { [model.inputs[0]!.name]: x });
const dir = mkdtempSync(join(tmpdir(), 'bn-adapt-profile-'));
const s = await ort.InferenceSession.create(encodeModel(v.ir), { intraOpNumThreads: 2, graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: join(dir, 'p'), logSeverityLevel: 3, enableMemPattern: false });
const feeds = { [model.inputs[0]!.name]: toOrt(x) };
for (let i = 0; i < 2; i++) await s.run(feeds);
const times: number[] = [];
for (let i = 0; i < 5; i++) { const t0 = performance.now(); await s.run(feeds); times.push(performance.now() - t0); }
s.endProfiling();
const ev = JSON.parse(readFileSync(join(dir, readdirSync(dir)[0]!), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string; output_type_shape?: unknown } }[];
rmSync(dir, { recursive: true, force: true });
const runs = ev.filter((e) => e.name === 'model_run').length;
const byOp = new Map<string, number>(), byNode = new Map<string, number>();
for (const e of ev) {
  if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
  const ms = e.dur / runs / 1000, op = e.args?.op_name ?? '?';
  byOp.set(op, (byOp.get(op) ?? 0) + ms);
  const key = `${op} ${e.name.replace(/_kernel_time$/, '')} ${JSON.stringify(e.args?.output_type_shape ?? [])}`;
  byNode.set(key, (byNode.get(key) ?? 0) + ms);
}
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
console.log(`${name} ${form}${pointwiseStats.current ? '' : ' (no pointwise)'}: median ${quantile(times, 0.5).toFixed(1)} ms per call, kernels ${total.toFixed(1)} ms: ` +
  [...byOp].sort((a, b) => b[1] - a[1]).map(([k, ms]) => `${k} ${ms.toFixed(1)}`).join(', '));
if (nodes) console.log([...byNode].sort((a, b) => b[1] - a[1]).slice(0, nodes).map(([k, ms]) => `  ${ms.toFixed(2)} ${k}`).join('\n'));
await v.release();
