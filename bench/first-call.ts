// The first call of a training step (compile plus one run), which is what a user waits for before
// anything happens (issue 12, item 3: under 1 s for the shipped models). Source trees alternate in
// one loop, each call in its own process so none reuses another's compiled sessions or warm JIT:
//
//   npx tsx bench/first-call.ts [--trees src,/tmp/before/src] [--rounds 3]
//
// Each process compiles and runs one all-parameter cross-entropy step, batch 64, 2 threads, of
// the shipped CNN and then the ViT, and prints the milliseconds of each. A tree other than this
// one is an earlier commit's src/ (`git worktree add /tmp/before <commit>`, with node_modules
// linked in).
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : d; };

if (process.argv[2] === '--child') {
  const src = resolve(process.argv[3]!);
  const imp = (p: string) => import(pathToFileURL(join(src, p)).href);
  const { loadModel } = await imp('model.ts');
  const losses = await imp('train/losses.ts');
  const { f32, i64 } = await imp('onnx/tensor.ts');
  const out: Record<string, number> = {};
  for (const name of ['fmnist-cnn', 'fmnist-vit']) {
    const m = await loadModel(join(root, 'models', `${name}.onnx`), { threads: 2 });
    const x = f32([64, 1, 28, 28], new Float32Array(64 * 784).map((_, i) => Math.sin(i)));
    const t = performance.now();
    const step = m.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: m.outputs[0].name, labels: 'y' }) });
    await step.run({ [m.inputs[0].name]: x, y: i64([64], Array.from({ length: 64 }, (_, i) => i % 10)) });
    out[name] = performance.now() - t;
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

const trees = arg('trees', join(root, 'src')).split(',');
const rounds = Number(arg('rounds', '3'));
const times = new Map<string, Record<string, number>[]>(trees.map((t) => [t, []]));
for (let r = 0; r < rounds; r++) {
  for (const tree of trees) {
    const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', tree], { cwd: root, encoding: 'utf8' });
    const line = p.stdout.trim().split('\n').at(-1) ?? '';
    if (p.status !== 0 || !line.startsWith('{')) throw new Error(`${tree}: ${p.stderr.slice(-500)}`);
    times.get(tree)!.push(JSON.parse(line));
  }
}
for (const [tree, rows] of times) {
  const cols = Object.keys(rows[0]!).map((k) => `${k} ${rows.map((r) => r[k]!.toFixed(0)).join(', ')} ms`);
  console.log(`${tree}: ${cols.join('; ')}`);
}
