// Per-lane sums of squares over the blocked [M, H·W, b] view that BN-adapt's statistics read
// (src/onnx/nchwc-batchstats.ts), in four forms, against the plain sum on the same view (issue 12,
// BN-adapt ≤ 1.3× inference): ReduceSumSquare (what the graph uses), Mul + ReduceSum, the diagonal
// of a batched Gram MatMul, and ReduceSum alone (the sums of d, for scale). Kernel time per form
// from onnxruntime's profile (median over the runs after 5), one session per form, 2 threads.
//
//   npx tsx bench/reduce-forms.ts [--runs 30]
import { readFileSync, rmSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { ort } from '../src/onnx/runtime.ts';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 30);
const B = 16;
// The views of the benchmark's models: cnn28 (64×32×28², 64×64×14²), ResNet-18/MobileNetV2 at 224 (batch 16).
const VIEWS: [number, number][] = [[128, 784], [256, 196], [256, 3136], [64, 12544]];

function graph(form: string, M: number, L: number): Uint8Array {
  const b = new ModelBuilder({ opset: 18 }).input('x', 'float32', [M, L, B]);
  if (form !== 'gram-diag') b.initializer('ax', i64([1], [1]));
  if (form === 'sum') b.node('ReduceSum', ['x', 'ax'], ['y'], { keepdims: 0 });
  if (form === 'sumsq') b.node('ReduceSumSquare', ['x', 'ax'], ['y'], { keepdims: 0 });
  if (form === 'mul-sum') b.node('Mul', ['x', 'x'], ['xx']).node('ReduceSum', ['xx', 'ax'], ['y'], { keepdims: 0 });
  if (form === 'gram-diag') {
    const eye = new Float32Array(B * B);
    for (let i = 0; i < B; i++) eye[i * B + i] = 1;
    b.initializer('eye', f32([B, B], eye)).initializer('ax2', i64([1], [2]))
      .node('Transpose', ['x'], ['xt'], { perm: [0, 2, 1] }).node('MatMul', ['xt', 'x'], ['g'])
      .node('Mul', ['g', 'eye'], ['gd']).node('ReduceSum', ['gd', 'ax2'], ['y'], { keepdims: 0 });
  }
  return encodeModel(b.output('y').build());
}

const dir = mkdtempSync(join(tmpdir(), 'refit-reduce-forms-'));
try {
  console.log(`| view [M, H·W, ${B}] | ${['sum', 'sumsq', 'mul-sum', 'gram-diag'].join(' | ')} | sumsq / sum |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [M, L] of VIEWS) {
    const x = new ort.Tensor('float32', Float32Array.from({ length: M * L * B }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.3), [M, L, B]);
    const ms: Record<string, number> = {};
    for (const form of ['sum', 'sumsq', 'mul-sum', 'gram-diag']) {
      const prefix = join(dir, form);
      const s = await ort.InferenceSession.create(graph(form, M, L), { intraOpNumThreads: 2, graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: prefix });
      for (let r = 0; r < runs; r++) await s.run({ x });
      (s as unknown as { endProfiling(): void }).endProfiling();
      await s.release();
      const file = readdirSync(dir).find((f) => f.startsWith(form))!;
      const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { cat: string; name: string; dur: number }[];
      rmSync(join(dir, file));
      const perNode = new Map<string, number[]>();
      for (const e of events) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) (perNode.get(e.name) ?? perNode.set(e.name, []).get(e.name)!).push(e.dur / 1000);
      const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
      ms[form] = [...perNode.values()].reduce((t, a) => t + median(a.slice(5)), 0);
    }
    console.log(`| [${M}, ${L}, ${B}] | ${['sum', 'sumsq', 'mul-sum', 'gram-diag'].map((f) => ms[f]!.toFixed(2)).join(' | ')} | ${(ms.sumsq! / ms.sum!).toFixed(1)} |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
