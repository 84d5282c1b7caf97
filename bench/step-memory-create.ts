// Peak RSS inside one adapter's session creation and after its first call (memory pass 2, docs/speed.md):
// one process per reading (run it several times, alternating forms); the kernel's high-water mark
// (VmHWM) is reset before each non-probe session creation, after a GC.
//
//   node --expose-gc --import tsx bench/step-memory-create.ts [--src /tmp/base/src] [--model resnet18_64]
//        [--method tent|bn-adapt] [--matrix graph|js] [--bn blocked|standard] [--save-optimized /tmp/opt.onnx]
//
// --src: the source tree to load (default this checkout's src/); --matrix: tinyConvDense.matrix (dense
// layer4 matrices built in the graph or baked in JS); --bn: bnAdaptForm.current; --save-optimized:
// onnxruntime's optimised graph of the step (or BN-adapt) session, to list its initializers.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt; };
const src = resolve(arg('src', join(root, 'src')));
const imp = (p: string) => import(pathToFileURL(join(src, p)).href);
const mb = (k: string) => Math.round(Number(new RegExp(`${k}:\\s+(\\d+)`).exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024);
const gc = () => (globalThis as { gc?: () => void }).gc?.();

const { loadModel } = await imp('model.ts');
const { createAdapter } = await imp('tta/index.ts');
const { f32 } = await imp('onnx/tensor.ts');
const { runtime } = await imp('onnx/runtime.ts');
const dense = await imp('train/tiny-conv-dense.ts');
const bn = await imp('tta/bn-adapt.ts');
if (dense.tinyConvDense.matrix !== undefined) dense.tinyConvDense.matrix = arg('matrix', 'graph');
bn.bnAdaptForm.current = arg('bn', 'blocked');
const save = arg('save-optimized', '');
const sessions: { level: string; rss_before: number; peak_in_create: number; rss_after: number }[] = [];
const { InferenceSession } = runtime().ort;
const create = InferenceSession.create.bind(InferenceSession) as (...a: unknown[]) => Promise<unknown>;
(InferenceSession as unknown as { create: unknown }).create = async (bytes: unknown, o: Record<string, unknown> | undefined) => {
  const level = String(o?.graphOptimizationLevel ?? 'all');
  // The block-size probe (nchwc.ts) saves its own optimised graph: leave its path alone.
  if (save && level !== 'disabled' && !o?.optimizedModelFilePath) o = { ...o, optimizedModelFilePath: save };
  gc();
  writeFileSync('/proc/self/clear_refs', '5');
  const before = mb('VmRSS');
  const s = await create(bytes, o);
  sessions.push({ level, rss_before: before, peak_in_create: mb('VmHWM'), rss_after: mb('VmRSS') });
  return s;
};
const model = arg('model', 'resnet18_64');
const [batch, c, h, w] = model === 'resnet18_224' ? [16, 3, 224, 224] : model === 'cnn28' ? [64, 1, 28, 28] : [64, 3, 64, 64];
const m = await loadModel(join(root, 'tmp', 'foreign-models', `${model}.onnx`), { threads: 2 });
let s = 1;
const x = f32([batch, c, h, w], Float32Array.from({ length: batch! * c! * h! * w! }, () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; }));
const a = createAdapter(m, arg('method', 'tent'));
await a.predict(x);
const big = sessions.filter((r) => r.level !== 'disabled').at(-1)!;
process.stdout.write(JSON.stringify({ src, model, method: arg('method', 'tent'), matrix: arg('matrix', 'graph'), bn: arg('bn', 'blocked'), ...big, peak_after_first_call: mb('VmHWM'), loadavg: readFileSync('/proc/loadavg', 'utf8').trim() }) + '\n');
