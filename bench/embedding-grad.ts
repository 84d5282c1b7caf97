// The gradient of a large embedding table at opset 13–15: one-hot [vocab, tokens] times the
// output gradient (the only form below opset 16) against ScatterND with reduction 'add' at the
// lifted opset 16 (src/train/step-opset.ts). A GPT-2-sized table (50257 × 768) read by 8 × 128
// tokens, then a small head and the next-token loss; each form in its own child process (peak
// RSS is its own), the step time the median of --reps calls.
//
//   npx tsx bench/embedding-grad.ts [--vocab 50257] [--dim 768] [--tokens 1024] [--reps 5]
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const V = Number(arg('vocab', '50257')), D = Number(arg('dim', '768')), K = Number(arg('tokens', '1024')), reps = Number(arg('reps', '5'));

if (process.argv[2] === '--child') {
  const { ModelBuilder } = await import('../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../src/model.ts');
  const { Trainer, losses, optim, i64, f32 } = await import('../src/index.ts');
  const { stepOpsetLift } = await import('../src/train/step-opset.ts');
  stepOpsetLift.current = process.argv[3] === 'lifted';
  const b = new ModelBuilder({ opset: 14 });
  b.input('idx', 'int64', ['B', 'T']);
  b.initializer('wte', f32([V, D], new Float32Array(V * D).map((_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5)));
  b.initializer('head', f32([D, 8], new Float32Array(D * 8).map((_, i) => ((i * 40503) % 100) / 100 - 0.5)));
  b.node('Gather', ['wte', 'idx'], ['h']);
  b.node('MatMul', ['h', 'head'], ['logits']);
  b.output('logits');
  const model = new RefitModel(b.build(), { threads: 2 });
  const T = 128, B = K / T;
  const idx = Array.from({ length: K }, (_, i) => (i * 7919) % V);
  const feeds = { idx: i64([B, T], idx), labels: i64([B, T], idx.map((v) => v % 8)) };
  const trainer = new Trainer(model.compileTrainStep({ trainable: ['wte', 'head'], loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) }), optim.sgd({ lr: 1e-3 }));
  const first = await trainer.step(feeds);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) { const t = performance.now(); await trainer.step(feeds); times.push(performance.now() - t); }
  times.sort((a, c) => a - c);
  console.log(JSON.stringify({ ms: times[times.length >> 1], loss: first.loss, peakRssMb: process.resourceUsage().maxRSS / 1024 }));
  process.exit(0);
}

console.log(`embedding ${V} × ${D}, ${K} tokens, opset 14, 2 threads; step = gradient of the table and a head + SGD update:`);
for (const form of ['one-hot (opset 14)', 'lifted']) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', form === 'lifted' ? 'lifted' : 'onehot', '--vocab', String(V), '--dim', String(D), '--tokens', String(K), '--reps', String(reps)], { encoding: 'utf8' });
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  const j = (() => { try { return JSON.parse(line); } catch { return { error: (r.stderr || line).slice(-300) }; } })();
  console.log(`- ${form}: ${j.error ? `failed: ${j.error}` : `${j.ms.toFixed(1)} ms per step, peak RSS ${j.peakRssMb.toFixed(0)} MB, first loss ${j.loss.toFixed(6)}`}`);
}
