// Section 3 of the demo: the user draws or uploads digits, labels each with a class, and
// personalizes the shipped ViT with a LoRA adapter trained on them (shifted copies as
// augmentation), with a progress bar, before/after accuracy (on the samples, and on a held-out
// fifth when there are ten or more), the adapter saved to IndexedDB, reloaded and downloadable.
// Bad input (no samples, a file that is not an image, a model fetch cut off, a budget the step does
// not fit) is a message in the section, and nothing is saved unless training finished.
import * as refit from '../src/web.ts';
import { DrawPad, imageFileTo28, rng, shifted, show } from './digits.ts';

const $ = (id: string) => document.getElementById(id)!;
export const ADAPTER_KEY = 'my-digits';
const BATCH = 16;

interface Sample { x: Float32Array; label: number; from: string }

export interface PersonalResult {
  n: number;
  nHeld: number;
  steps: number;
  before: { train: number; held?: number };
  after: { train: number; held?: number };
  losses: number[];
  /** The adapter reloaded from IndexedDB predicted the same class for every sample. */
  reloadedSame: boolean;
  /** Largest |logit| difference between the trained adapter and the reloaded one. */
  reloadedMaxDiff: number;
  /** What the memory budget chose, when one was set. */
  budget?: string;
}

export interface PersonalOptions {
  steps: number;
  /** The ViT's URL (?vit=…; the tests point it at a route that cuts the body off). */
  modelUrl: string;
  onResult: (r: PersonalResult) => void;
}

function logitsArgmax(t: refit.Tensor): number[] {
  const d = t.data as Float32Array, C = t.dims[1]!;
  return Array.from({ length: t.dims[0]! }, (_, i) => {
    let best = 0;
    for (let c = 1; c < C; c++) if (d[i * C + c]! > d[i * C + best]!) best = c;
    return best;
  });
}

function batchOf(samples: Sample[]): refit.Tensor {
  const x = new Float32Array(samples.length * 784);
  samples.forEach((s, i) => x.set(s.x, i * 784));
  return refit.f32([samples.length, 1, 28, 28], x);
}

async function predict(model: refit.RefitModel, samples: Sample[]): Promise<refit.Tensor> {
  return (await model.run({ x: batchOf(samples) })).logits!;
}

const acc = (pred: number[], samples: Sample[]) => samples.length ? pred.filter((p, i) => p === samples[i]!.label).length / samples.length : NaN;
const pct = (v: number | undefined) => v === undefined || Number.isNaN(v) ? '–' : `${(100 * v).toFixed(0)}%`;

export function setupPersonal(opts: PersonalOptions): void {
  const samples: Sample[] = [];
  const pad = new DrawPad($('my-pad') as HTMLCanvasElement);
  const label = $('my-label') as HTMLSelectElement;
  const message = $('my-message');
  const say = (m: string) => { message.textContent = m; };
  const list = $('my-samples');

  const add = (x: Float32Array, from: string) => {
    const s: Sample = { x, label: Number(label.value), from };
    samples.push(s);
    const fig = document.createElement('figure');
    const c = document.createElement('canvas');
    show(x, c);
    const cap = document.createElement('figcaption');
    cap.textContent = String(s.label);
    cap.title = from;
    fig.append(c, cap);
    list.appendChild(fig);
    $('my-count').textContent = `${samples.length} sample${samples.length === 1 ? '' : 's'}`;
  };

  $('my-add').onclick = () => {
    if (pad.strokes === 0) return say('The pad is empty: draw a digit first, then add it.');
    add(pad.pixels(), 'drawn');
    pad.clear();
    say('');
  };
  $('my-clear').onclick = () => pad.clear();
  $('my-reset').onclick = () => {
    samples.length = 0;
    list.replaceChildren();
    $('my-count').textContent = '0 samples';
  };
  const files = $('my-files') as HTMLInputElement;
  files.onchange = async () => {
    const bad: string[] = [];
    for (const f of Array.from(files.files ?? [])) {
      try { add(await imageFileTo28(f), f.name); } catch (e) { bad.push((e as Error).message); }
    }
    files.value = '';
    say(bad.length ? `Not added: ${bad.join(' ')}` : '');
  };

  const run = $('my-run') as HTMLButtonElement;
  run.onclick = async () => {
    run.disabled = true;
    say('');
    try {
      opts.onResult(await personalize(samples, opts, say));
    } catch (e) {
      say(e instanceof refit.MemoryBudgetError
        ? `This model does not fit the memory budget, nothing was trained or saved. ${e.message}`
        : `Personalization failed, nothing was saved: ${(e as Error).message}`);
      $('my-status').textContent = 'failed';
    } finally {
      run.disabled = false;
    }
  };
}

async function personalize(samples: Sample[], opts: PersonalOptions, say: (m: string) => void): Promise<PersonalResult> {
  if (samples.length === 0) throw new Error('no samples yet: draw a digit (or upload an image), pick its class, and add it; then personalize.');
  // A fifth held out (every fifth sample) when there are ten or more, so "after" is not only the training set.
  const held = samples.length >= 10 ? samples.filter((_, i) => i % 5 === 4) : [];
  const train = samples.filter((s) => !held.includes(s));
  const status = $('my-status');
  const progress = $('my-progress') as HTMLProgressElement;
  progress.value = 0;
  const budgetMb = Number(($('my-budget') as HTMLInputElement).value || 0);
  $('my-budget-used').textContent = '';

  status.textContent = 'loading the ViT…';
  const base = await refit.loadModelFrom(opts.modelUrl, {
    onProgress: (n, total) => { status.textContent = `loading the ViT: ${(n / 1e6).toFixed(1)}${total ? ` of ${(total / 1e6).toFixed(1)}` : ''} MB`; },
  });
  const trainBefore = logitsArgmax(await predict(base, train));
  const heldBefore = held.length ? logitsArgmax(await predict(base, held)) : [];
  const before = { train: acc(trainBefore, train), ...(held.length ? { held: acc(heldBefore, held) } : {}) };
  $('my-before').textContent = `${pct(before.train)} on ${train.length} trained on${held.length ? `, ${pct(before.held)} on ${held.length} held out` : ''}`;
  $('my-after').textContent = '–';
  $('my-reloaded').textContent = '–';

  const p = refit.peft.withAdapter(base, ADAPTER_KEY, refit.peft.lora({ targets: /attn\.(q|v)$|^head$/, rank: 4, alpha: 8, seed: 0 }));
  const loss = refit.losses.crossEntropy({ logits: 'logits' });
  const trainable = p.trainableNames(ADAPTER_KEY);
  let budget: string | undefined;
  let step: refit.TrainStep;
  if (budgetMb > 0) {
    // Only this LoRA selection is tried (candidates: []): too large is a MemoryBudgetError, not another rung.
    const s = await p.compileTrainStep({ trainable, loss, memoryBudget: { bytes: budgetMb * 1e6, batch: BATCH, optimizer: 'adamw', candidates: [] } });
    budget = `${(s.budget.countedBytes / 1e6).toFixed(2)} MB of ${budgetMb} MB budget (${s.budget.trainable.length} LoRA tensors train)`;
    $('my-budget-used').textContent = `the step needs ${budget}`;
    step = s;
  } else {
    step = p.compileTrainStep({ trainable, loss });
  }
  const trainer = new refit.Trainer(step, refit.optim.adamw({ lr: 1e-2, weightDecay: 0 }));
  progress.max = opts.steps;
  const random = rng(1);
  const losses: number[] = [];
  const xb = new Float32Array(BATCH * 784), yb = new BigInt64Array(BATCH);
  for (let s = 0; s < opts.steps; s++) {
    for (let i = 0; i < BATCH; i++) {
      // Every training sample once per pass, then random picks; each shifted by up to 2 pixels.
      const k = i + s * BATCH < train.length ? (i + s * BATCH) % train.length : Math.floor(random() * train.length);
      const dx = Math.floor(random() * 5) - 2, dy = Math.floor(random() * 5) - 2;
      shifted(train[k]!.x, dx, dy, xb.subarray(i * 784, (i + 1) * 784));
      yb[i] = BigInt(train[k]!.label);
    }
    const r = await trainer.step({ x: refit.f32([BATCH, 1, 28, 28], xb.slice()), y: refit.i64([BATCH], yb.slice()) });
    losses.push(r.loss);
    progress.value = s + 1;
    status.textContent = `step ${s + 1} of ${opts.steps}, loss ${r.loss.toFixed(3)}`;
    $('my-losses').textContent = losses.map((l) => l.toFixed(2)).join(' ');
  }
  const trainedLogits = await predict(p, samples);
  const trainAfter = logitsArgmax(await predict(p, train));
  const heldAfter = held.length ? logitsArgmax(await predict(p, held)) : [];
  const after = { train: acc(trainAfter, train), ...(held.length ? { held: acc(heldAfter, held) } : {}) };
  $('my-after').textContent = `${pct(after.train)} on ${train.length} trained on${held.length ? `, ${pct(after.held)} on ${held.length} held out` : ''}`;

  // Saved only now, in one IndexedDB transaction (saveAdapterToIndexedDB): a failure above leaves the previous adapter or none.
  status.textContent = 'saving to IndexedDB…';
  await refit.saveAdapterToIndexedDB(p, ADAPTER_KEY);
  const reloaded = await refit.loadAdapterFromIndexedDB(await refit.loadModelFrom(opts.modelUrl), ADAPTER_KEY);
  const again = await predict(reloaded, samples);
  const a = trainedLogits.data as Float32Array, b = again.data as Float32Array;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
  const same = logitsArgmax(trainedLogits).every((c, i) => c === logitsArgmax(again)[i]);
  $('my-reloaded').textContent = same ? `same predictions on all ${samples.length} (largest logit difference ${maxDiff.toExponential(1)})` : `DIFFERENT predictions (largest logit difference ${maxDiff.toExponential(1)})`;
  const dl = $('my-download') as HTMLButtonElement;
  dl.disabled = false;
  dl.onclick = () => refit.downloadAdapter(p, ADAPTER_KEY);
  status.textContent = `done: adapter '${ADAPTER_KEY}' saved to IndexedDB`;
  return { n: samples.length, nHeld: held.length, steps: opts.steps, before, after, losses, reloadedSame: same, reloadedMaxDiff: maxDiff, ...(budget ? { budget } : {}) };
}
