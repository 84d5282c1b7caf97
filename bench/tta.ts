// Test-time adaptation benchmark (issue 4): every method in METHODS on the shipped CNN and ViT
// over Fashion-MNIST-C streams at severity 5, plus PyTorch Tent and EATA (the parity code,
// test/fixtures/tta/torch_stream.py) on the same stream with the same CPU threads, in the same run.
//
//   npx tsx bench/tta.ts [--quick] [--models cnn,vit] [--methods tent,eata] [--tables main,torch,recurring,batch16,correlated,cost]
//                        [--threads 2] [--rounds 10] [--cnn models/fmnist-cnn.onnx] [--vit models/fmnist-vit.onnx] [--resume] [--out bench/results/tta]
//                        [--opt cotta.augmentations=8 ...]   (override a method's option; listed in the report)
//                        [--samples recurring=1024 ...]      (shorten a table's stream to N samples per domain; named in the report)
//                        [--jobs 2]                          (children at once, for the error tables only)
//
// Tables: the main continual table (15 corruptions in CORRUPTIONS order, one pass over the 10k test
// set each, batch 64, state carried across domains), batch 16, the temporally correlated label
// stream (Dirichlet γ = 0.1), 10 rounds of the recurring stream, PyTorch Tent/EATA on the main
// stream, and the cost table: time per adapted batch relative to plain inference with peak RSS,
// refit and PyTorch, on a short stream (10 batches per domain) run alone so that the error tables
// may run in parallel (--jobs) without spoiling the times. Each (model, table, method) runs in its
// own child process (so each has its own peak RSS); plain inference is timed in the same child,
// on every batch just before the method sees it. Methods get the bundled in-distribution set as
// `refit demo` gives it (EATA's Fisher; RMT's prototypes, warm-up and replay).
//
// --quick: 2 batches per domain, 2 recurring rounds: a check of the whole pipeline, not a result.
// Results: <out>.json and <out>.md (quick: <out>-quick.*); --resume skips jobs already in the JSON;
// --render rewrites <out>.md from <out>.json without running anything.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { continualStream, correlatedLabelStream, recurringStream, type Stream } from '../src/data/streams.ts';
import { CORRUPTIONS } from '../src/data/corruptions/index.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { createAdapter, METHODS, loadSourceSet, sourceDataOptions } from '../src/tta/index.ts';
import { paperLr } from '../src/tta/common.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

type Scenario = 'continual' | 'correlated' | 'recurring';
type Table = 'main' | 'batch16' | 'correlated' | 'recurring' | 'torch' | 'cost';
interface Job {
  id: string; table: Table; engine: 'refit' | 'torch'; model: 'cnn' | 'vit'; modelPath: string; method: string; scenario: Scenario; batch: number;
  quick: boolean; threads: number; rounds: number; options: Record<string, unknown>;
  /** Samples per domain when the table runs on a shortened stream (--samples); undefined = the whole 10k test set. */
  samplesPerDomain?: number;
}
interface DomainScore { domain: string; round: number; error: number; samples: number }
interface JobResult {
  job: Job;
  domains: DomainScore[];
  meanError: number;
  /** Mean ms per adapted batch (predict + adapt), first batch excluded (it compiles, and EATA/RMT prepare there). */
  msPerBatch: number;
  firstBatchMs: number;
  /** Plain inference of the same model, same batches, same child (refit jobs). */
  plainMsPerBatch?: number;
  maxRssMB?: number;
  skipped: number;
  /** Batches on which the method updated parameters (info.used > 0), and samples it used in all (refit jobs). */
  updatedBatches?: number;
  usedSamples?: number;
  batches: number;
  seconds: number;
}

// ------------------------------------------------------------------ worker (one child per job)

function makeStream(job: Job): Stream {
  const data = loadFashionMnist('test');
  const base = { severity: 5, batchSize: job.batch, seed: 0, ...(job.quick ? { batchesPerDomain: 2 } : job.samplesPerDomain ? { samplesPerDomain: job.samplesPerDomain } : {}) };
  if (job.scenario === 'correlated') return correlatedLabelStream(data, base);
  if (job.scenario === 'recurring') return recurringStream(data, { ...base, rounds: job.rounds });
  return continualStream(data, base);
}

function scoreDomains(perDomain: Map<string, { domain: string; round: number; wrong: number; samples: number }>): { domains: DomainScore[]; meanError: number } {
  const domains = [...perDomain.values()].map((d) => ({ domain: d.domain, round: d.round, error: d.wrong / d.samples, samples: d.samples }));
  return { domains, meanError: domains.reduce((a, d) => a + d.error, 0) / Math.max(1, domains.length) };
}

async function refitWorker(job: Job): Promise<JobResult> {
  const t0 = performance.now();
  const model = await loadModel(job.modelPath, { threads: job.threads });
  const input = model.inputs[0]!.name;
  const logitsName = model.outputs.find((o) => o.name === 'logits')?.name ?? model.outputs[0]!.name;
  const stream = makeStream(job);
  const adapter = createAdapter(model, job.method, { ...sourceDataOptions(job.method, loadSourceSet()), ...job.options });
  const perDomain = new Map<string, { domain: string; round: number; wrong: number; samples: number }>();
  const times: number[] = [], plain: number[] = [];
  let skipped = 0, updatedBatches = 0, usedSamples = 0;
  for (const b of stream) {
    // Plain inference of the unadapted model on the same batch, just before the method: the
    // baseline sees the same load as the candidate.
    const x = f32([b.size, 1, 28, 28], b.x);
    let s = performance.now();
    await model.run({ [input]: x }, { outputs: [logitsName] });
    plain.push(performance.now() - s);
    s = performance.now();
    const r = await adapter.predict(x);
    times.push(performance.now() - s);
    skipped = r.info.skipped;
    if (r.info.used > 0) updatedBatches++;
    usedSamples += r.info.used;
    const pred = argmaxRows(r.logits.data as Float32Array, r.logits.dims[1]!);
    let wrong = 0;
    for (let i = 0; i < b.size; i++) if (pred[i] !== b.y[i]) wrong++;
    const key = `${b.round}|${b.domain}`;
    const d = perDomain.get(key) ?? { domain: b.domain, round: b.round, wrong: 0, samples: 0 };
    d.wrong += wrong; d.samples += b.size;
    perDomain.set(key, d);
    if (times.length % 100 === 0) process.stderr.write(`  ${job.id}: ${times.length}/${stream.numBatches} batches\n`);
  }
  await adapter.release();
  await model.release();
  const mean = (v: number[]) => (v.length > 1 ? v.slice(1).reduce((a, t) => a + t, 0) / (v.length - 1) : v[0]!);
  return {
    job, ...scoreDomains(perDomain),
    msPerBatch: mean(times),
    firstBatchMs: times[0]!,
    plainMsPerBatch: mean(plain),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
    skipped, updatedBatches, usedSamples, batches: times.length, seconds: (performance.now() - t0) / 1000,
  };
}

async function torchWorker(job: Job): Promise<JobResult> {
  const t0 = performance.now();
  const model = await loadModel(job.modelPath);
  const ln = !model.ir.graph.nodes.some((n) => n.opType === 'BatchNormalization');
  const args = [resolve(root, 'test/fixtures/tta/torch_stream.py'), '--model', job.modelPath, '--method', job.method, '--threads', String(job.threads), '--lr', String(paperLr(job.batch, ln))];
  if (job.method === 'eata') args.push('--fisher', resolve(root, 'data/fashion-mnist/train-2k-images-idx3-ubyte.gz'));
  // As bench/torch_step.py: BLAS single-threaded inside torch's intra-op threads.
  const env = { ...process.env, OMP_NUM_THREADS: String(job.threads), MKL_NUM_THREADS: String(job.threads), OPENBLAS_NUM_THREADS: '1' };
  const py = spawn('/usr/bin/python3', args, { env, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  py.stdout.on('data', (d) => { out += d; });
  const done = new Promise<number>((res, rej) => { py.on('error', rej); py.on('close', res); });
  const write = (buf: Uint8Array) => new Promise<void>((res, rej) => { if (py.stdin.write(buf, (e) => (e ? rej(e) : undefined))) res(); else py.stdin.once('drain', res); });
  const stream = makeStream(job);
  const keys: { domain: string; round: number }[] = [];
  const keyIndex = new Map<string, number>();
  let n = 0;
  for (const b of stream) {
    const key = `${b.round}|${b.domain}`;
    if (!keyIndex.has(key)) { keyIndex.set(key, keys.length); keys.push({ domain: b.domain, round: b.round }); }
    await write(new Uint8Array(Int32Array.from([b.size, keyIndex.get(key)!]).buffer));
    await write(new Uint8Array(b.x.buffer, b.x.byteOffset, b.x.byteLength));
    await write(b.y);
    if (++n % 100 === 0) process.stderr.write(`  ${job.id}: ${n}/${stream.numBatches} batches\n`);
  }
  await write(new Uint8Array(8));
  py.stdin.end();
  const code = await done;
  if (code !== 0) throw new Error(`${job.id}: torch_stream.py exited with ${code}`);
  const r = JSON.parse(out) as { wrong: Record<string, number>; seen: Record<string, number>; batches: number; msPerBatch: number; nonFiniteLoss: number };
  const perDomain = new Map(keys.map((k, i) => [String(i), { ...k, wrong: r.wrong[String(i)] ?? 0, samples: r.seen[String(i)] ?? 0 }]));
  await model.release();
  return { job, ...scoreDomains(perDomain), msPerBatch: r.msPerBatch, firstBatchMs: NaN, skipped: r.nonFiniteLoss, batches: r.batches, seconds: (performance.now() - t0) / 1000 };
}

// ------------------------------------------------------------------ orchestration

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function runChild(job: Job): Promise<JobResult> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--worker', JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('error', rej);
    child.on('close', (code) => {
      if (code !== 0) return rej(new Error(`${job.id}: worker exited with ${code}`));
      try { res(JSON.parse(out.trim().split('\n').pop()!)); } catch (e) { rej(new Error(`${job.id}: bad worker output: ${String(e)}`)); }
    });
  });
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const threads = Number(arg('threads') ?? 2);
  const rounds = Number(arg('rounds') ?? (quick ? 2 : 10));
  const paths = { cnn: resolve(arg('cnn') ?? resolve(root, 'models/fmnist-cnn.onnx')), vit: resolve(arg('vit') ?? resolve(root, 'models/fmnist-vit.onnx')) };
  const models = (arg('models') ?? 'cnn,vit').split(',') as ('cnn' | 'vit')[];
  const methods = (arg('methods') ?? METHODS.join(',')).split(',');
  const tables = (arg('tables') ?? 'main,torch,recurring,batch16,correlated,cost').split(',') as Table[];
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`unknown method '${m}'; known: ${METHODS.join(', ')}`);
  for (const m of models) {
    if (m !== 'cnn' && m !== 'vit') throw new Error(`--models takes cnn and/or vit, got '${m}'`);
    if (!existsSync(paths[m])) throw new Error(`model not found: ${paths[m]} (train it with scripts/train-source.ts, or pass --${m} <path>)`);
  }
  const out = resolve(arg('out') ?? resolve(root, 'bench/results/tta')) + (quick ? '-quick' : '');
  // --opt method.option=value (repeatable): non-default options, e.g. fewer CoTTA augmentations.
  const overrides: Record<string, Record<string, unknown>> = {};
  process.argv.forEach((a, i) => {
    if (a !== '--opt') return;
    const m = /^([\w-]+)\.(\w+)=(.+)$/.exec(process.argv[i + 1] ?? '');
    if (!m) throw new Error(`--opt takes method.option=value, got '${process.argv[i + 1]}'`);
    let v: unknown = m[3];
    try { v = JSON.parse(m[3]!); } catch { /* a string */ }
    (overrides[m[1]!] ??= {})[m[2]!] = v;
  });
  // --samples table=N (repeatable): shorten that table's stream to N samples per domain. The
  // cost table defaults to 640 (10 batches per domain): it measures time, not error.
  const samples: Partial<Record<Table, number>> = { cost: 640 };
  process.argv.forEach((a, i) => {
    if (a !== '--samples') return;
    const m = /^(\w+)=(\d+)$/.exec(process.argv[i + 1] ?? '');
    if (!m) throw new Error(`--samples takes table=N, got '${process.argv[i + 1]}'`);
    samples[m[1] as Table] = Number(m[2]);
  });
  const jobs: Job[] = [];
  const add = (table: Table, engine: Job['engine'], model: 'cnn' | 'vit', method: string, scenario: Scenario, batch: number) =>
    jobs.push({
      id: `${table}/${model}/${method}${table === 'cost' && engine === 'torch' ? '/torch' : ''}`, table, engine, model, modelPath: paths[model], method, scenario, batch,
      quick, threads, rounds, options: engine === 'refit' ? overrides[method] ?? {} : {}, samplesPerDomain: samples[table],
    });
  const scenarioOf: Record<Table, [Scenario, number]> = {
    main: ['continual', 64], batch16: ['continual', 16], correlated: ['correlated', 64], recurring: ['recurring', 64], cost: ['continual', 64], torch: ['continual', 64],
  };
  // Jobs run in the order of --tables, model by model.
  for (const model of models) for (const table of tables) {
    if (!(table in scenarioOf)) throw new Error(`unknown table '${table}'; known: ${Object.keys(scenarioOf).join(', ')}`);
    const [scenario, batch] = scenarioOf[table];
    if (table !== 'torch') {
      for (const method of methods) if (!(model === 'vit' && method === 'bn-adapt')) add(table, 'refit', model, method, scenario, batch); // the ViT has no BatchNorm
    }
    if (table === 'torch' || table === 'cost') for (const method of ['tent', 'eata'].filter((m) => methods.includes(m))) add(table, 'torch', model, method, scenario, batch);
  }
  const results = new Map<string, JobResult>();
  // The command lines that produced the file, for the report (--resume appends).
  let commands: string[] = [];
  const resume = process.argv.includes('--resume') || process.argv.includes('--render');
  if (resume && existsSync(`${out}.json`)) {
    const prev = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as { results: JobResult[]; meta: Meta };
    for (const r of prev.results) results.set(r.job.id, r);
    commands = prev.meta.commands ?? [];
  }
  if (process.argv.includes('--render')) {
    save(out, quick, threads, [...results.values()], commands);
    process.stdout.write(readFileSync(`${out}.md`, 'utf8'));
    return;
  }
  commands.push(`npx tsx bench/tta.ts ${process.argv.slice(2).join(' ')}`);
  // --jobs K runs K children at once: for the error tables only (their times are then not
  // comparable); the cost table must run alone on a quiet machine.
  const parallel = Number(arg('jobs') ?? 1);
  if (parallel > 1 && tables.includes('cost')) throw new Error('--jobs > 1 would distort the cost table: run --tables cost on its own with --jobs 1');
  const t0 = performance.now();
  const todo = jobs.filter((j) => !results.has(j.id));
  const failures: string[] = [];
  const runNext = async (): Promise<void> => {
    for (let job = todo.shift(); job; job = todo.shift()) {
      process.stderr.write(`${job.id} (${jobs.length - todo.length}/${jobs.length}, ${((performance.now() - t0) / 1000).toFixed(0)} s so far)\n`);
      try {
        const r = await runChild(job);
        results.set(job.id, r);
        process.stderr.write(`  ${job.id} → error ${(100 * r.meanError).toFixed(2)}%, ${r.msPerBatch.toFixed(1)} ms/batch, ${r.seconds.toFixed(0)} s\n`);
        save(out, quick, threads, [...results.values()], commands);
      } catch (e) {
        failures.push(String(e));
        process.stderr.write(`  FAILED ${String(e)}\n`);
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, runNext));
  if (failures.length) process.stderr.write(`${failures.length} job(s) failed:\n${failures.join('\n')}\n`);
  save(out, quick, threads, [...results.values()], commands);
  process.stdout.write(readFileSync(`${out}.md`, 'utf8'));
}

function save(out: string, quick: boolean, threads: number, results: JobResult[], commands: string[]): void {
  mkdirSync(dirname(out), { recursive: true });
  const meta = { quick, threads, node: process.version, date: new Date().toISOString(), cpus: (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? null, commands };
  writeFileSync(`${out}.json`, JSON.stringify({ meta, results }, null, 1));
  writeFileSync(`${out}.md`, render(results, meta));
}

// ------------------------------------------------------------------ report

/** ' (first N samples of each domain)' when a table ran on a shortened stream. */
const shortened = (r: JobResult | undefined) => (r?.job.samplesPerDomain ? ` (${r.job.samplesPerDomain} samples per domain, not the whole test set)` : '');
const pct = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '—' : (100 * v).toFixed(1));
const abbrev = (d: string) => d.replace('_noise', '').replace('_blur', '').replace('_compression', '').replace('_transform', '');

interface Meta { quick: boolean; threads: number; node: string; date: string; commands?: string[] }

function render(results: JobResult[], meta: Meta): string {
  const get = (id: string) => results.find((r) => r.job.id === id);
  const models = [...new Set(results.map((r) => r.job.model))];
  const methods = METHODS.filter((m) => results.some((r) => r.job.method === m));
  const L: string[] = [];
  L.push(`# Test-time adaptation benchmark${meta.quick ? ' (QUICK: 2 batches per domain, not a result)' : ''}`, '');
  const opts = [...new Set(results.filter((r) => Object.keys(r.job.options ?? {}).length).map((r) => `${r.job.method}: ${JSON.stringify(r.job.options)}`))];
  if (opts.length) L.push(`**Non-default options:** ${opts.join('; ')}.`, '');
  const threadsOf = (pick: (r: JobResult) => boolean) => [...new Set(results.filter(pick).map((r) => r.job.threads))].join('/') || '—';
  L.push(`Fashion-MNIST-C, severity 5, ${CORRUPTIONS.length} corruptions in a fixed order, state carried across domains. Threads per process (onnxruntime-node intra-op, PyTorch intra-op): error tables ${threadsOf((r) => r.job.table !== 'cost')}, cost table ${threadsOf((r) => r.job.table === 'cost')}. The error tables may run several jobs at once (\`--jobs\`), so their times are not reported; every time below comes from the cost table, run alone. Last written ${meta.date}, Node ${meta.node}; numbers in bench/results/tta${meta.quick ? '-quick' : ''}.json.`, '');
  if (meta.commands?.length) L.push('Made by:', '', ...meta.commands.map((c) => `    ${c}`), '');
  for (const model of models) {
    const rows = methods.map((m) => get(`main/${model}/${m}`)).filter((r): r is JobResult => !!r);
    const torch = ['tent', 'eata'].map((m) => get(`torch/${model}/${m}`)).filter((r): r is JobResult => !!r);
    if (rows.length === 0 && torch.length === 0) continue;
    L.push(`## Error (%) on the continual stream, ${model.toUpperCase()}, batch 64`, '');
    L.push(`| method | ${CORRUPTIONS.map(abbrev).join(' | ')} | mean |`, `|---|${CORRUPTIONS.map(() => '---:').join('|')}|---:|`);
    for (const r of [...rows, ...torch]) {
      const label = r.job.engine === 'torch' ? `${r.job.method} (PyTorch)` : r.job.method;
      L.push(`| ${label} | ${CORRUPTIONS.map((c) => pct(r.domains.find((d) => d.domain === c)?.error)).join(' | ')} | **${pct(r.meanError)}** |`);
    }
    L.push('');
  }
  const simple = (table: Table, title: string) => {
    if (!results.some((r) => r.job.table === table)) return;
    L.push(`## ${title}${shortened(results.find((r) => r.job.table === table))}`, '', `| method | ${models.map((m) => m.toUpperCase()).join(' | ')} |`, `|---|${models.map(() => '---:').join('|')}|`);
    for (const m of methods) L.push(`| ${m} | ${models.map((mo) => pct(get(`${table}/${mo}/${m}`)?.meanError)).join(' | ')} |`);
    L.push('');
  };
  simple('batch16', 'Mean error (%), continual stream, batch 16');
  simple('correlated', 'Mean error (%), temporally correlated labels (Dirichlet γ = 0.1), batch 64');
  for (const model of models) {
    const rows = methods.map((m) => get(`recurring/${model}/${m}`)).filter((r): r is JobResult => !!r);
    if (rows.length === 0) continue;
    const R = Math.max(...rows.map((r) => r.job.rounds));
    L.push(`## Recurring continual stream, ${model.toUpperCase()}: mean error (%) per round${shortened(rows[0])}`, '');
    L.push(`| method | ${Array.from({ length: R }, (_, i) => `round ${i + 1}`).join(' | ')} | last − first |`, `|---|${Array.from({ length: R }, () => '---:').join('|')}|---:|`);
    for (const r of rows) {
      const per = roundErrors(r);
      L.push(`| ${r.job.method} | ${per.map(pct).join(' | ')} | ${((100 * (per[per.length - 1]! - per[0]!)) >= 0 ? '+' : '') + (100 * (per[per.length - 1]! - per[0]!)).toFixed(1)} |`);
    }
    L.push('');
  }
  // Time comes from the cost table (a short stream run alone on a quiet machine) when it exists,
  // else from the main runs.
  const costTable: Table = results.some((r) => r.job.table === 'cost') ? 'cost' : 'main';
  if (results.some((r) => r.job.table === costTable)) {
    const any = results.find((r) => r.job.table === costTable);
    L.push(`## Cost per adapted batch (${costTable === 'cost' ? 'cost' : 'main'} table runs, batch 64${shortened(any)})`, '');
    L.push('Each method ran in its own child process, one at a time; plain inference = the unadapted model run on every batch just before the method, in that child (first batch excluded from both). "first batch" includes compiling the step graphs and the one-off preparation (EATA\'s Fisher, RMT\'s prototypes and warm-up).', '');
    L.push('"updated" counts the batches on which a gradient method changed parameters (EATA and SAR update only when their filters keep a sample).', '');
    L.push('| model | method | ms / batch | plain inference ms / batch | relative to plain | first batch ms | peak RSS MiB | skipped steps | updated batches |', '|---|---|---:|---:|---:|---:|---:|---:|---:|');
    const gradient = new Set(['tent', 'eata', 'sar', 'cotta', 'rmt']);
    for (const model of models) for (const m of methods) {
      const r = get(`${costTable}/${model}/${m}`);
      const upd = gradient.has(m) && r?.updatedBatches !== undefined ? `${r.updatedBatches}/${r.batches}` : '—';
      if (r) L.push(`| ${model} | ${m} | ${r.msPerBatch.toFixed(1)} | ${r.plainMsPerBatch!.toFixed(1)} | ${(r.msPerBatch / r.plainMsPerBatch!).toFixed(2)}× | ${r.firstBatchMs.toFixed(0)} | ${r.maxRssMB!.toFixed(0)} | ${r.skipped} | ${upd} |`);
    }
    L.push('');
  }
  if (results.some((r) => r.job.engine === 'torch')) {
    L.push('## refit vs PyTorch (same stream, same threads)', '', `Error: the main table's whole stream. Time per batch: ${costTable === 'cost' ? 'the cost table\'s runs (refit and PyTorch one after the other in the same run, quiet machine)' : 'the main runs'}.`, '');
    L.push('| model | method | refit error % | PyTorch error % | refit − PyTorch (points) | refit ms / batch | PyTorch ms / batch | refit speed-up |', '|---|---|---:|---:|---:|---:|---:|---:|');
    for (const model of models) for (const m of ['tent', 'eata']) {
      const a = get(`main/${model}/${m}`), b = get(`torch/${model}/${m}`);
      const [ta, tb] = timing(get, model, m);
      if ((a && b) || (ta && tb)) L.push(`| ${model} | ${m} | ${pct(a?.meanError)} | ${pct(b?.meanError)} | ${a && b ? (100 * (a.meanError - b.meanError)).toFixed(2) : '—'} | ${ta?.toFixed(1) ?? '—'} | ${tb?.toFixed(1) ?? '—'} | ${ta && tb ? `${(tb / ta).toFixed(2)}×` : '—'} |`);
    }
    L.push('');
  }
  L.push(...targets(get), '');
  return L.join('\n');
}

/** refit and PyTorch ms per batch for a method: from the cost table if it ran, else the main/torch runs. */
function timing(get: (id: string) => JobResult | undefined, model: string, m: string): [number | undefined, number | undefined] {
  const a = get(`cost/${model}/${m}`), b = get(`cost/${model}/${m}/torch`);
  if (a && b) return [a.msPerBatch, b.msPerBatch];
  return [get(`main/${model}/${m}`)?.msPerBatch, get(`torch/${model}/${m}`)?.msPerBatch];
}

function roundErrors(r: JobResult): number[] {
  const R = r.job.rounds;
  return Array.from({ length: R }, (_, k) => {
    const ds = r.domains.filter((d) => d.round === k);
    return ds.reduce((a, d) => a + d.error, 0) / Math.max(1, ds.length);
  });
}

function targets(get: (id: string) => JobResult | undefined): string[] {
  const L = ['## Targets (issue 4)', '', '| target | measured | met |', '|---|---|---|'];
  const yes = (ok: boolean | undefined) => (ok === undefined ? 'not measured' : ok ? 'yes' : '**no**');
  const src = get('main/cnn/source');
  for (const m of ['tent', 'eata', 'sar', 'rmt']) {
    const r = get(`main/cnn/${m}`);
    const cut = src && r ? 1 - r.meanError / src.meanError : undefined;
    L.push(`| ${m} cuts the CNN's continual mean error by ≥ 25% vs Source | ${cut === undefined ? '—' : `${pct(r!.meanError)}% vs ${pct(src!.meanError)}%: ${(100 * cut).toFixed(1)}% cut`} | ${yes(cut === undefined ? undefined : cut >= 0.25)} |`);
  }
  for (const m of ['eata', 'sar', 'rmt', 'cotta']) for (const model of ['cnn', 'vit']) {
    const r = get(`recurring/${model}/${m}`);
    if (!r) continue;
    const per = roundErrors(r);
    const d = 100 * (per[per.length - 1]! - per[0]!);
    L.push(`| ${m} (${model}): round ${per.length} error ≤ round 1 error + 1 point | ${pct(per[per.length - 1])}% vs ${pct(per[0])}% (${d >= 0 ? '+' : ''}${d.toFixed(1)}) | ${yes(d <= 1)} |`);
  }
  for (const model of ['cnn', 'vit']) for (const m of ['tent', 'eata']) {
    const a = get(`main/${model}/${m}`), b = get(`torch/${model}/${m}`);
    if (a && b) {
      const d = 100 * (a.meanError - b.meanError);
      L.push(`| refit ${m} (${model}) within 0.5 point of PyTorch or better | ${d >= 0 ? '+' : ''}${d.toFixed(2)} points | ${yes(d <= 0.5)} |`);
    }
    const [ta, tb] = timing(get, model, m);
    if (ta && tb) L.push(`| refit ${m} (${model}) ≥ 1.5× faster per batch than PyTorch | ${(tb / ta).toFixed(2)}× | ${yes(tb / ta >= 1.5)} |`);
  }
  for (const m of ['bn-adapt', 'lame']) for (const model of ['cnn', 'vit']) {
    const r = get(`cost/${model}/${m}`) ?? get(`main/${model}/${m}`);
    if (!r) continue;
    const x = r.msPerBatch / r.plainMsPerBatch!;
    L.push(`| ${m} (${model}) costs ≤ 1.3× plain inference | ${x.toFixed(2)}× | ${yes(x <= 1.3)} |`);
  }
  return L;
}

// ------------------------------------------------------------------ entry

const w = process.argv.indexOf('--worker');
if (w >= 0) {
  const job = JSON.parse(process.argv[w + 1]!) as Job;
  const r = await (job.engine === 'torch' ? torchWorker(job) : refitWorker(job));
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  await main();
}
