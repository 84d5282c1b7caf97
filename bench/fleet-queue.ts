// Jobs per second through the NATS JetStream job queue (src/fleet/queue-nats.ts), with 1, 2 and 4
// consumer processes: trivial handlers (what the queue itself costs) and handlers that burn a
// fixed ~20 ms of CPU (does the queue let CPU-bound work scale?). Each run pre-publishes its jobs
// to fresh streams on a throwaway nats-server, starts the worker processes, and times from "go"
// until every job is acknowledged; configurations alternate within each round and the median is
// reported. CPU seconds of the workers and of nats-server come from /proc.
//
//   nice -n 10 npx tsx bench/fleet-queue.ts [--rounds 3] [--trivial-jobs 3000] [--cpu-jobs 80]
//     [--burn-ms 20] [--max-s 150] [--out bench/results/fleet-queue.json]
// (--cpu-jobs is per worker.) Worker mode (spawned by this script): --worker <url> <prefix> <iters> <concurrency>
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { NatsJobQueue } from '../src/fleet/queue-nats.ts';
import { startNats } from '../test/helpers/nats.ts';
import { quantile } from './stats.ts';

/** Fixed CPU work: `iters` rounds of dependent float math (the result is returned so it is not optimized away). */
function burn(iters: number): number {
  let x = 1.0001;
  for (let i = 0; i < iters; i++) x = Math.sqrt(x * x + i) * 0.999 + 1e-9;
  return x;
}

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const TICK = 100; // USER_HZ on Linux
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / TICK; // utime, stime
  } catch {
    return 0;
  }
}

interface Run { kind: 'trivial' | 'cpu'; workers: number; concurrency: number; jobs: number; seconds: number; jobsPerS: number; workerCpuS: number; serverCpuS: number; publishPerS: number; handled: number; redelivered: number }

async function main(): Promise<void> {
  const rounds = arg('rounds', 3), trivialJobs = arg('trivial-jobs', 3000), cpuJobs = arg('cpu-jobs', 80), burnMs = arg('burn-ms', 20), maxS = arg('max-s', 150);
  const oi = process.argv.indexOf('--out');
  const out = oi >= 0 ? process.argv[oi + 1] : undefined;
  const t0 = Date.now();
  const nats = await startNats();
  if (!nats) throw new Error('nats-server not installed (Debian package nats-server)');
  try {
    // Calibrate the burn: iterations for burnMs of one core's CPU time (median of 5 probes).
    const probe = 2_000_000;
    // CPU time, not wall time, so other processes on the shared machine do not skew it.
    const per = quantile(Array.from({ length: 5 }, () => { const s = process.cpuUsage(); burn(probe); const d = process.cpuUsage(s); return (d.user + d.system) / 1000 / probe; }), 0.5);
    const iters = Math.round(burnMs / per);
    console.log(`cores: ${cpus().length} (${cpus()[0]?.model}), load ${loadavg().map((l) => l.toFixed(1)).join(' ')}; burn ${iters} iterations ≈ ${burnMs} ms of one core`);

    const configs: { kind: 'trivial' | 'cpu'; workers: number; concurrency: number }[] = [];
    for (const w of [1, 2, 4]) configs.push({ kind: 'trivial', workers: w, concurrency: 1 });
    for (const w of [1, 2, 4]) configs.push({ kind: 'trivial', workers: w, concurrency: 8 });
    for (const w of [1, 2, 4]) configs.push({ kind: 'cpu', workers: w, concurrency: 1 });
    const runs: Run[] = [];
    let n = 0;
    let stoppedEarly = false;
    for (let r = 0; r < rounds && !stoppedEarly; r++) {
      // Rotate the order each round so a load change on the shared machine hits every configuration.
      const order = configs.map((_, i) => configs[(i + r * 4) % configs.length]);
      for (const c of order) {
        if ((Date.now() - t0) / 1000 > maxS) {
          stoppedEarly = true;
          break;
        }
        const jobs = c.kind === 'trivial' ? trivialJobs : cpuJobs * c.workers;
        const run = await once(nats.url, () => nats.pid(), `b${process.pid}_${n++}`, c.kind, c.workers, c.concurrency, jobs, c.kind === 'cpu' ? iters : 0);
        runs.push(run);
        console.log(`round ${r + 1} ${c.kind} workers=${c.workers} conc=${c.concurrency}: ${run.jobs} jobs in ${run.seconds.toFixed(2)} s = ${run.jobsPerS.toFixed(0)} jobs/s; worker CPU ${run.workerCpuS.toFixed(2)} s, nats-server CPU ${run.serverCpuS.toFixed(2)} s; handled ${run.handled}, redelivered ${run.redelivered}`);
      }
    }
    if (stoppedEarly) console.log(`stopped after ${maxS} s (--max-s); medians below are over the rounds that ran`);

    // "cores used": CPU seconds (workers + server) per wall second, what the shared machine gave us.
    // "jobs per worker CPU-s": flat from 1 to 4 workers means the queue adds no contention;
    // wall-clock scaling then follows the cores the workers get.
    console.log('\n| handler | workers (processes) × concurrency | jobs/s (median) | vs 1 worker | cores used | jobs per worker CPU-s | worker CPU ms/job | nats-server CPU ms/job | redelivered | runs |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    const summary: Record<string, unknown>[] = [];
    for (const c of configs) {
      const rs = runs.filter((x) => x.kind === c.kind && x.workers === c.workers && x.concurrency === c.concurrency);
      if (!rs.length) continue;
      const base = runs.filter((x) => x.kind === c.kind && x.workers === 1 && x.concurrency === c.concurrency);
      const med = quantile(rs.map((x) => x.jobsPerS), 0.5);
      const medBase = base.length ? quantile(base.map((x) => x.jobsPerS), 0.5) : NaN;
      const wcpu = quantile(rs.map((x) => (x.workerCpuS / x.jobs) * 1000), 0.5);
      const scpu = quantile(rs.map((x) => (x.serverCpuS / x.jobs) * 1000), 0.5);
      const cores = quantile(rs.map((x) => (x.workerCpuS + x.serverCpuS) / x.seconds), 0.5);
      const perCpu = quantile(rs.map((x) => x.jobs / x.workerCpuS), 0.5);
      const redelivered = rs.reduce((a, x) => a + x.redelivered, 0);
      const label = c.kind === 'trivial' ? 'trivial' : `~${burnMs} ms CPU`;
      console.log(`| ${label} | ${c.workers} × ${c.concurrency} | ${med.toFixed(0)} | ${(med / medBase).toFixed(2)}× | ${cores.toFixed(2)} | ${perCpu.toFixed(1)} | ${wcpu.toFixed(2)} | ${scpu.toFixed(3)} | ${redelivered} | ${rs.length} |`);
      summary.push({ ...c, jobsPerS: med, speedup: med / medBase, coresUsed: cores, jobsPerWorkerCpuS: perCpu, workerCpuMsPerJob: wcpu, serverCpuMsPerJob: scpu, redelivered, runs: rs.length });
    }
    const pub = quantile(runs.map((x) => x.publishPerS), 0.5);
    console.log(`\npublish (64 outstanding, one connection): median ${pub.toFixed(0)} jobs/s over ${runs.length} runs`);
    if (out) writeFileSync(out, JSON.stringify({ cores: cpus().length, burnMs, burnIters: iters, summary, publishPerS: pub, runs }, null, 2) + '\n');
  } finally {
    await nats.cleanup();
  }
}

async function once(url: string, serverPid: () => number | undefined, prefix: string, kind: 'trivial' | 'cpu', workers: number, concurrency: number, jobs: number, iters: number): Promise<Run> {
  const q = await NatsJobQueue.connect({ servers: url, prefix, ackWaitMs: 30_000 });
  const children: ChildProcess[] = [];
  try {
    // Pre-publish, 64 in flight, so publishing never limits the consumers being measured.
    const tp = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < jobs) {
        const i = next++;
        await q.publish({ id: `${prefix}-${i}`, kind: 'consolidate', model: 'bench', device: `d${i}`, round: 1 });
      }
    }));
    const publishPerS = jobs / ((performance.now() - tp) / 1000);
    const script = fileURLToPath(import.meta.url);
    for (let w = 0; w < workers; w++) {
      children.push(spawn(process.execPath, ['--import', 'tsx', script, '--worker', url, prefix, String(iters), String(concurrency)], { stdio: ['pipe', 'pipe', 'inherit'] }));
    }
    const outs = children.map(() => '');
    children.forEach((c, i) => c.stdout!.on('data', (d) => (outs[i] += d)));
    const waitFor = async (re: RegExp) => {
      const t = Date.now();
      while (!outs.every((o) => re.test(o))) {
        if (children.some((c) => c.exitCode !== null)) throw new Error('a worker exited early');
        if (Date.now() - t > 60_000) throw new Error(`workers silent for 60 s (waiting for ${re})`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await waitFor(/ready/);
    const cpu0 = children.map((c) => cpuSeconds(c.pid)), s0 = cpuSeconds(serverPid());
    const tg = performance.now();
    for (const c of children) c.stdin!.write('go\n');
    for (;;) {
      const s = await q.stats();
      if (s.waiting === 0 && s.inFlight === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const seconds = (performance.now() - tg) / 1000;
    const workerCpuS = children.reduce((a, c, i) => a + cpuSeconds(c.pid) - cpu0[i]!, 0);
    const serverCpuS = cpuSeconds(serverPid()) - s0;
    for (const c of children) c.stdin!.write('report\n');
    await waitFor(/report \d+ \d+/);
    let handled = 0, redelivered = 0;
    for (const o of outs) {
      const m = /report (\d+) (\d+)/.exec(o)!;
      handled += Number(m[1]);
      redelivered += Number(m[2]);
    }
    return { kind, workers, concurrency, jobs, seconds, jobsPerS: jobs / seconds, workerCpuS, serverCpuS, publishPerS, handled, redelivered };
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await q.close();
  }
}

// Dispatch last: main() uses the module's constants, which must be initialized first.
if (process.argv[2] === '--worker') {
  const [url, prefix, itersS, concS] = process.argv.slice(3);
  const iters = Number(itersS);
  const q = await NatsJobQueue.connect({ servers: url, prefix, ackWaitMs: 30_000, warn: () => {} });
  let sink = 0, handled = 0, redelivered = 0;
  process.stdout.write('ready\n');
  await new Promise<void>((res) => process.stdin.once('data', () => res()));
  await q.consume(async (_job, ctx) => {
    if (iters > 0) sink += burn(iters);
    handled++;
    if (ctx.attempt > 1) redelivered++;
  }, { concurrency: Number(concS) });
  // Any later line asks for the counts.
  process.stdin.on('data', () => process.stdout.write(`report ${handled} ${redelivered} ${sink === -1 ? 1 : 0}\n`));
  process.stdin.on('end', () => process.exit(0));
} else {
  await main();
}
