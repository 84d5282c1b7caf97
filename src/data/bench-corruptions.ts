/**
 * Benchmark: all 15 corruptions x 5 severities over the 10k Fashion-MNIST test set.
 *
 *   npx tsx src/data/bench-corruptions.ts              # serial, then on worker threads
 *   npx tsx src/data/bench-corruptions.ts --limit 2000 --workers 2 --json out.json
 *
 * Prints seconds per corruption (serial, one thread), the wall and CPU time of the whole grid
 * serially, and its wall time on `--workers` threads (default: all cores), in one process.
 * The CPU time is the figure to compare when the machine is shared with other jobs.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { CORRUPTIONS, SEVERITIES, corrupt } from './corruptions/index.ts';
import { corruptParallel } from './corruptions/parallel-node.ts';
import { loadFashionMnist } from './fashion-mnist.ts';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const limit = arg('limit') !== undefined ? Number(arg('limit')) : undefined;
  const workers = Number(arg('workers') ?? availableParallelism());
  const skipSerial = process.argv.includes('--parallel-only');
  const ds = loadFashionMnist('test', limit !== undefined ? { limit } : {});
  const { n, height: h, width: w } = ds;
  console.log(`corrupting ${n} images (${h}x${w}) x ${CORRUPTIONS.length} corruptions x ${SEVERITIES.length} severities`);
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, load average ${loadavg().map((v) => v.toFixed(2)).join(' ')}`);

  const perType: Record<string, number> = {};
  let serial = NaN;
  let serialCpu = NaN;
  if (!skipSerial) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (const type of CORRUPTIONS) {
      const t = performance.now();
      for (const s of SEVERITIES) corrupt(ds.images, n, h, w, type, s, 0);
      perType[type] = (performance.now() - t) / 1000;
      console.log(`  ${type.padEnd(18)} ${perType[type]!.toFixed(2)} s`);
    }
    serial = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    serialCpu = (c.user + c.system) / 1e6;
    console.log(
      `serial (1 thread): ${serial.toFixed(1)} s wall, ${serialCpu.toFixed(1)} s CPU for all ${CORRUPTIONS.length * SEVERITIES.length} variants`,
    );
  }

  const jobs = CORRUPTIONS.flatMap((type) => SEVERITIES.map((severity) => ({ type, severity, seed: 0 })));
  const t1 = performance.now();
  await corruptParallel(ds.images, n, h, w, jobs, { workers, keep: false });
  const parallel = (performance.now() - t1) / 1000;
  console.log(`parallel (${workers} worker threads): ${parallel.toFixed(1)} s for all ${jobs.length} variants`);

  const json = arg('json');
  if (json) {
    writeFileSync(
      json,
      JSON.stringify({ n, h, w, workers, serialSeconds: serial, serialCpuSeconds: serialCpu, parallelSeconds: parallel, perTypeSerialSeconds: perType, loadavg: loadavg() }, null, 2),
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
