// Load test of `refit serve` on loopback (issue 13), bounded in requests and time. The server
// runs in this process on the shipped CNN; the load comes from a child process (like autocannon:
// its own event loop, keep-alive raw HTTP/1.1 sockets, bodies built before the clock starts), so
// the client's parsing is not charged to the server's event loop. Plain onnxruntime (a bare
// InferenceSession on the same file with the session options `refit serve` uses: memory arena off,
// no spinning, optimization 'all') is timed at each phase's batch size right before and after the
// phase, in the same run, and the phase is compared with the mean. CPU time is counted too (this
// process's, which holds the server; not the client's): on a shared machine a phase with two busy
// processes gets a larger share of the cores than plain onnxruntime alone, which flatters the
// wall-clock ratio, while samples per CPU-second do not depend on the share.
//
// Phases: predict-only with batch-32 requests (base64 and JSON inputs), with batch-1 requests
// joined by micro-batching (base64, JSON; JSON without micro-batching), each closed-loop at
// saturation; then open-loop (fixed rate, latency from the scheduled send time, so a stalled
// server cannot hide its queue) at half the saturating request rate; then predict+adapt with N
// tenants (Tent; the continual controller with every label sent back as feedback one batch late,
// counted against what the server accepted).
//
// Usage: npx tsx bench/serve-load.ts [--seconds 5] [--tenants 8] [--rounds 1] [--quick]
//                                   [--inference-workers 2] [--only <phase name part>] [--micro-batch-max 32]
//   --rounds N repeats the predict-only phases N times (interleaved) and reports medians.
//   --inference-workers N: the server's plain-inference worker threads (0: on the event loop).
//   --only: run only the phases whose name contains this text (e.g. 'batch-32').
//   --micro-batch-max N: the most samples one joined run takes (the server's microBatch.maxSamples).
// Writes bench/results/serve-load.json and prints markdown tables.
import { writeFileSync, readFileSync } from 'node:fs';
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { createSession } from '../src/onnx/runtime.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { float32ToBase64 } from '../src/serve/inputs.ts';

const MODEL = fileURLToPath(new URL('../models/fmnist-cnn.onnx', import.meta.url));

interface PhaseSpec {
  name: string;
  port: number;
  mode: 'closed' | 'open';
  connections: number;
  /** Requests per second (open loop). */
  rate?: number;
  maxRequests: number;
  maxSeconds: number;
  encoding: 'json' | 'base64';
  batch: number;
  /** Requests of connection c go to tenant `t${c % tenants}`; unset: no tenant header. */
  tenants?: number;
  /** Send each predict's labels as feedback one batch later (continual controller). */
  feedback?: boolean;
}

interface PhaseResult {
  requests: number;
  errors: number;
  statuses: Record<string, number>;
  seconds: number;
  requestsPerSecond: number;
  samplesPerSecond: number;
  p50ms: number;
  p99ms: number;
  /** Open loop: the rate asked for and the rate sent. */
  targetRate?: number;
  sentRate?: number;
  /** Open loop: how late requests left the client after they were due. */
  sendDelay?: { p50ms: number; p99ms: number };
  /** The first connection error, if any. */
  firstError?: string;
  feedback?: { labelsSent: number; accepted: number; unknown: number; expired: number; invalid: number; requests: number; errors: number; p50ms: number; p99ms: number };
}

const pct = (a: number[], p: number) => {
  if (a.length === 0) return NaN;
  const s = Float64Array.from(a).sort();
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

/**
 * The q-quantile of a Prometheus histogram's observations between two reads (cumulative counts by
 * bucket bound `le`), interpolated linearly inside the bucket as Prometheus's histogram_quantile does.
 */
function bucketQuantile(now: Map<string, number>, before: Map<string, number>, q: number): number {
  const rows = [...now].map(([le, c]) => [le === '+Inf' ? Infinity : Number(le), c - (before.get(le) ?? 0)] as const).sort((a, b) => a[0] - b[0]);
  const total = rows.at(-1)?.[1] ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let lo = 0, below = 0;
  for (const [le, c] of rows) {
    if (c >= rank) return le === Infinity ? lo : lo + ((le - lo) * (rank - below)) / Math.max(c - below, 1e-9);
    lo = le;
    below = c;
  }
  return lo;
}

// -------------------------------------------------------------------------------------------------
// The client (child process)
// -------------------------------------------------------------------------------------------------

/** One keep-alive HTTP/1.1 connection, one request at a time; answers status and (if asked) body. */
class Conn {
  private sock: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: { status: number; body?: string }) => void; reject: (e: Error) => void; wantBody: boolean } | undefined;
  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.setNoDelay(true);
    this.sock.on('data', (d) => this.onData(d));
    const fail = (e: Error) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(e);
    };
    this.sock.on('error', fail);
    this.sock.on('close', () => fail(new Error('connection closed')));
  }
  request(bytes: Buffer, wantBody = false): Promise<{ status: number; body?: string }> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject, wantBody };
      this.sock.write(bytes);
    });
  }
  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0 || !this.waiting) return;
    const head = this.buf.toString('latin1', 0, end);
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!cl) {
      this.waiting.reject(new Error(`no content-length in ${head.split('\r\n')[0]}`));
      return;
    }
    const total = end + 4 + Number(cl[1]);
    if (this.buf.length < total) return;
    const status = Number(head.slice(9, 12));
    const body = this.waiting.wantBody ? this.buf.toString('utf8', end + 4, total) : undefined;
    this.buf = this.buf.subarray(total);
    const w = this.waiting;
    this.waiting = undefined;
    w.resolve({ status, body });
  }
  close(): void {
    this.sock.destroy();
  }
}

function requestBytes(path: string, body: string, tenant?: string): Buffer {
  const len = Buffer.byteLength(body);
  return Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n${tenant ? `x-refit-tenant: ${tenant}\r\n` : ''}\r\n${body}`);
}

/** Open loop: how late the client sent each request after it was due (its own timer and free connections). */
let sendDelay: number[] = [];

async function runPhase(s: PhaseSpec): Promise<PhaseResult> {
  const data = loadFashionMnist('test', { limit: 4096 });
  const windows = Math.floor(data.n / s.batch);
  const inputsAt = (w: number) => {
    const x = data.images.subarray((w % windows) * s.batch * 784, ((w % windows) + 1) * s.batch * 784);
    return s.encoding === 'base64' ? { dims: [s.batch, 1, 28, 28], base64: float32ToBase64(x) } : { dims: [s.batch, 1, 28, 28], data: Array.from(x) };
  };
  const nBodies = Math.min(windows, 64);
  const tenantOf = (c: number) => (s.tenants ? `t${c % s.tenants}` : undefined);
  // One prebuilt request per body (and per tenant where there are tenants).
  const tenantsN = s.tenants ?? 1;
  const built: Buffer[][] = Array.from({ length: tenantsN }, (_, t) => Array.from({ length: nBodies }, (_, i) => requestBytes('/v1/models/cnn/predict', JSON.stringify({ inputs: inputsAt(i) }), s.tenants ? `t${t}` : undefined)));
  const conns = Array.from({ length: s.connections }, () => new Conn(s.port));
  const lat: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0, sent = 0;
  const fb = { labelsSent: 0, accepted: 0, unknown: 0, expired: 0, invalid: 0, requests: 0, errors: 0, lat: [] as number[] };
  let firstError: string | undefined;
  const failed = (e: Error) => {
    firstError ??= e.message;
    return { status: 0, body: undefined };
  };
  const count = (code: number) => {
    statuses[code] = (statuses[code] ?? 0) + 1;
    if (code !== 200) errors++;
  };
  const t0 = performance.now();
  const timeLeft = () => performance.now() - t0 < s.maxSeconds * 1000;

  if (s.mode === 'closed') {
    await Promise.all(conns.map(async (conn, c) => {
      const tenant = tenantOf(c);
      const t = s.tenants ? c % s.tenants : 0;
      let k = 0; // this connection's batch counter (feedback: labels of batch k go with window k)
      let last: { ids: string[]; labels: number[] } | undefined;
      const sendFeedback = async (f: { ids: string[]; labels: number[] }) => {
        const st = performance.now();
        const r = await conn.request(requestBytes('/v1/models/cnn/feedback', JSON.stringify(f), tenant), true).catch(failed);
        fb.lat.push(performance.now() - st);
        fb.requests++;
        fb.labelsSent += f.labels.length;
        if (r.status !== 200) { fb.errors++; return; }
        const rep = JSON.parse(r.body!) as { accepted: number; unknown: number; expired: number; invalid: number };
        for (const key of ['accepted', 'unknown', 'expired', 'invalid'] as const) fb[key] += rep[key];
      };
      while (sent < s.maxRequests && timeLeft()) {
        const i = sent++;
        const w = s.feedback ? (c + k * s.connections) % nBodies : i % nBodies;
        const st = performance.now();
        const r = await conn.request(built[t]![w]!, !!s.feedback).catch(failed);
        lat.push(performance.now() - st);
        count(r.status);
        if (s.feedback && r.status === 200) {
          const ids = (JSON.parse(r.body!) as { ids: string[] }).ids;
          const labels = Array.from(data.labels.subarray((w % windows) * s.batch, (w % windows + 1) * s.batch));
          if (last) await sendFeedback(last); // labels arrive one batch late
          last = { ids, labels };
        }
        k++;
      }
      if (last) await sendFeedback(last);
    }));
  } else {
    // Open loop: request i is due at t0 + i / rate; a free connection takes the oldest due request;
    // latency counts from when it was due.
    const rate = s.rate!;
    const free = [...conns];
    const queue: number[] = []; // due times
    sendDelay = [];
    let due = 0, done = 0;
    await new Promise<void>((resolve) => {
      const dispatch = () => {
        while (queue.length && free.length) {
          const dueAt = queue.shift()!;
          const conn = free.pop()!;
          const body = built[0]![sent++ % nBodies]!;
          sendDelay.push(performance.now() - dueAt);
          void conn.request(body).catch(failed).then((r) => {
            lat.push(performance.now() - dueAt);
            count(r.status);
            done++;
            free.push(conn);
            dispatch();
            if (done === due && (due >= s.maxRequests || !timeLeft())) resolve();
          });
        }
      };
      const tick = () => {
        const now = performance.now();
        const want = Math.min(s.maxRequests, Math.floor(((now - t0) / 1000) * rate) + 1);
        if (timeLeft()) for (; due < want; due++) queue.push(t0 + (due * 1000) / rate);
        dispatch();
        if (due < s.maxRequests && timeLeft()) setTimeout(tick, 1);
        else if (done === due) resolve();
      };
      tick();
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  for (const c of conns) c.close();
  const r: PhaseResult = {
    requests: lat.length, errors, statuses, seconds, requestsPerSecond: lat.length / seconds, samplesPerSecond: (lat.length * s.batch) / seconds,
    p50ms: pct(lat, 0.5), p99ms: pct(lat, 0.99), ...(firstError ? { firstError } : {}),
  };
  if (s.mode === 'open') Object.assign(r, { targetRate: s.rate, sentRate: lat.length / seconds, sendDelay: { p50ms: pct(sendDelay, 0.5), p99ms: pct(sendDelay, 0.99) } });
  if (s.feedback) {
    const { lat: fl, ...rest } = fb;
    r.feedback = { ...rest, p50ms: pct(fl, 0.5), p99ms: pct(fl, 0.99) };
  }
  return r;
}

if (process.argv.includes('--client')) {
  process.on('message', (m: PhaseSpec) => {
    runPhase(m).then((r) => process.send!(r), (e) => process.send!({ error: String((e as Error).stack ?? e) }));
  });
} else {
  await main();
}

// -------------------------------------------------------------------------------------------------
// The server side and plain onnxruntime (this process)
// -------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, tenants: { type: 'string', default: '8' }, rounds: { type: 'string', default: '1' }, quick: { type: 'boolean', default: false }, 'inference-workers': { type: 'string', default: '2' }, only: { type: 'string' }, 'micro-batch-max': { type: 'string', default: '32' } } });
  const microBatchMax = Number(args['micro-batch-max']);
  const inferenceWorkers = Number(args['inference-workers']);
  const only = (name: string) => !args.only || name.includes(args.only);
  const seconds = args.quick ? 2 : Number(args.seconds);
  const tenants = Number(args.tenants);
  const rounds = Number(args.rounds);
  const { loadModel } = await import('../src/model.ts');
  const { SqliteRegistry } = await import('../src/registry/index.ts');
  const { buildServer } = await import('../src/serve/index.ts');

  // refit serve loads models this way (src/cli/serve.ts).
  const cnn = await loadModel(MODEL, { memoryArena: false });
  const session = await createSession(readFileSync(MODEL), { memoryArena: false });
  const data = loadFashionMnist('test', { limit: 256 });
  const inputName = session.inputNames[0]!;

  const cpuSeconds = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1e6;
  /** Plain onnxruntime at `batch` over `ms`: samples per second and per CPU-second. */
  async function plain(batch: number, ms = 1500): Promise<{ samplesPerSecond: number; samplesPerCpuSecond: number }> {
    const x = new ort.Tensor('float32', data.images.slice(0, batch * 784), [batch, 1, 28, 28]);
    await session.run({ [inputName]: x });
    let n = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      await session.run({ [inputName]: new ort.Tensor('float32', x.data as Float32Array, [batch, 1, 28, 28]) });
      n += batch;
    }
    return { samplesPerSecond: n / ((performance.now() - t0) / 1000), samplesPerCpuSecond: n / cpuSeconds(process.cpuUsage(c0)) };
  }
  /**
   * Plain onnxruntime at a fixed rate (the control for the half-load latency): a run of `batch`
   * is due every 1/rate s, starts when due (or when the one before ends, if later), and its
   * latency counts from when it was due.
   */
  async function plainOpenLoop(batch: number, rate: number, ms: number): Promise<{ p50ms: number; p99ms: number; runs: number }> {
    const x = new ort.Tensor('float32', data.images.slice(0, batch * 784), [batch, 1, 28, 28]);
    await session.run({ [inputName]: x });
    const lat: number[] = [];
    const t0 = performance.now();
    for (let i = 0; ; i++) {
      const due = t0 + (i * 1000) / rate;
      if (due - t0 > ms) break;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await session.run({ [inputName]: new ort.Tensor('float32', x.data as Float32Array, [batch, 1, 28, 28]) });
      lat.push(performance.now() - due);
    }
    return { p50ms: pct(lat, 0.5), p99ms: pct(lat, 0.99), runs: lat.length };
  }
  const mean2 = (a: { samplesPerSecond: number; samplesPerCpuSecond: number }, b: typeof a) => ({
    samplesPerSecond: (a.samplesPerSecond + b.samplesPerSecond) / 2, samplesPerCpuSecond: (a.samplesPerCpuSecond + b.samplesPerCpuSecond) / 2,
  });

  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--client'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  /** Run a phase in the client; the server process's CPU seconds over it come back too. */
  const ask = (spec: PhaseSpec) => new Promise<PhaseResult & { serverCpuSeconds: number; loadavg: number }>((resolve, reject) => {
    const c0 = process.cpuUsage();
    child.once('message', (m: PhaseResult & { error?: string }) => (m.error ? reject(new Error(m.error)) : resolve({ ...m, serverCpuSeconds: cpuSeconds(process.cpuUsage(c0)), loadavg: os.loadavg()[0]! })));
    child.send(spec);
  });

  type Server = Awaited<ReturnType<typeof buildServer>>;
  const serve = async (opts: Partial<Parameters<typeof buildServer>[0]>): Promise<{ app: Server; port: number }> => {
    const app = await buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, maxTenants: 1000, inferenceWorkers, ...opts });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { app, port: (app.server.address() as net.AddressInfo).port };
  };
  /** Sum of a metric's samples (those whose labels include `having`, if given). */
  const metric = async (app: Server, name: string, having = ''): Promise<number> => {
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    let sum = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if ((m[1] ?? '').includes(having)) sum += Number(m[2]);
    return sum;
  };

  /** Cumulative bucket counts (le → observations) of a histogram (samples whose labels include `having`). */
  const buckets = async (app: Server, name: string, having = ''): Promise<Map<string, number>> => {
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    const out = new Map<string, number>();
    for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
      if (!m[1]!.includes(having)) continue;
      const le = /le="([^"]+)"/.exec(m[1]!)![1]!;
      out.set(le, (out.get(le) ?? 0) + Number(m[2]));
    }
    return out;
  };
  /** The joined-run sizes' buckets. */
  const runSizes = (app: Server) => buckets(app, 'refit_microbatch_samples');
  /** Where a half-load request's time went inside the server, from its histograms (ms, interpolated in buckets). */
  const serverSide = async (app: Server) => ({
    request: await buckets(app, 'refit_http_request_duration_seconds', 'route="/v1/models/:model/predict"'),
    wait: await buckets(app, 'refit_microbatch_wait_seconds'),
    run: await buckets(app, 'refit_inference_run_seconds'),
  });

  const results: Record<string, unknown>[] = [];
  const report = (row: Record<string, unknown>) => {
    results.push(row);
    console.error(`  ${row.phase}: ${JSON.stringify(row)}`);
  };

  // Predict-only: saturation (closed loop), plain onnxruntime before and after; then half the rate.
  const predictPhases: { name: string; batch: number; encoding: 'json' | 'base64'; connections: number; microBatch: { maxWaitMs: number }; half: boolean }[] = [
    { name: 'batch-32 requests, base64', batch: 32, encoding: 'base64', connections: 4, microBatch: { maxWaitMs: 0 }, half: true },
    { name: 'batch-32 requests, JSON', batch: 32, encoding: 'json', connections: 4, microBatch: { maxWaitMs: 0 }, half: true },
    { name: 'batch-1 requests, base64, micro-batching 2 ms', batch: 1, encoding: 'base64', connections: 64, microBatch: { maxWaitMs: 2 }, half: true },
    { name: 'batch-1 requests, JSON, micro-batching 2 ms', batch: 1, encoding: 'json', connections: 64, microBatch: { maxWaitMs: 2 }, half: true },
    { name: 'batch-1 requests, JSON, micro-batching off', batch: 1, encoding: 'json', connections: 64, microBatch: { maxWaitMs: 0 }, half: false },
  ];
  for (let round = 1; round <= rounds; round++) {
    for (const p of predictPhases) {
      if (!only(p.name)) continue;
      const { app, port } = await serve({ microBatch: { ...p.microBatch, maxSamples: microBatchMax } });
      const before = await plain(p.batch);
      const spec: PhaseSpec = { name: p.name, port, mode: 'closed', connections: p.connections, maxRequests: Math.ceil((100000 * seconds) / p.batch), maxSeconds: seconds, encoding: p.encoding, batch: p.batch };
      const sat = await ask(spec);
      const after = await plain(p.batch);
      const runs = await metric(app, 'refit_microbatch_samples_count');
      const meanRunBatch = runs > 0 ? (await metric(app, 'refit_microbatch_samples_sum')) / runs : p.batch;
      const ort = mean2(before, after);
      const perCpu = (sat.requests * p.batch) / sat.serverCpuSeconds;
      const row: Record<string, unknown> = {
        phase: p.name, round, load: 'saturating (closed loop)', connections: p.connections, ...sat,
        ortSamplesPerSecond: ort.samplesPerSecond, ratio: sat.samplesPerSecond / ort.samplesPerSecond,
        samplesPerCpuSecond: perCpu, ortSamplesPerCpuSecond: ort.samplesPerCpuSecond, cpuRatio: perCpu / ort.samplesPerCpuSecond, meanRunBatch,
      };
      if (p.batch === 1 && meanRunBatch > 1.5) {
        // The same service against onnxruntime at the batch size its runs actually had.
        const b = Math.round(meanRunBatch);
        const o = await plain(b);
        Object.assign(row, { ortAtRunBatch: { batch: b, samplesPerSecond: o.samplesPerSecond, ratio: sat.samplesPerSecond / o.samplesPerSecond, samplesPerCpuSecond: o.samplesPerCpuSecond, cpuRatio: perCpu / o.samplesPerCpuSecond } });
      }
      report(row);
      if (p.half) {
        const rate = sat.requestsPerSecond / 2;
        const sizes0 = await runSizes(app);
        const side0 = await serverSide(app);
        const half = await ask({ ...spec, mode: 'open', rate, maxRequests: Math.ceil(rate * seconds) });
        // How large the joined runs were at half load: runs of up to `le` samples, cumulative.
        const sizes1 = await runSizes(app);
        const halfRunSizes = Object.fromEntries([...sizes1].map(([le, c]) => [le, c - (sizes0.get(le) ?? 0)]));
        const side1 = await serverSide(app);
        const q = (k: keyof typeof side1) => ({ p50ms: 1000 * bucketQuantile(side1[k], side0[k], 0.5), p99ms: 1000 * bucketQuantile(side1[k], side0[k], 0.99) });
        const halfServerSide = { request: q('request'), ...(p.microBatch.maxWaitMs > 0 ? { wait: q('wait'), run: q('run') } : {}) };
        // The control: plain onnxruntime at the request's batch size and the same request rate, on the same machine now.
        const control = await plainOpenLoop(p.batch, rate, 2000);
        report({
          phase: p.name, round, load: 'half of saturating (open loop)', connections: p.connections, ...half, p99OverP50: half.p99ms / half.p50ms,
          ...(p.batch === 1 && p.microBatch.maxWaitMs > 0 ? { halfRunSizes } : {}),
          halfServerSide,
          ortSameRate: { ...control, p99OverP50: control.p99ms / control.p50ms },
        });
      }
      await app.close();
    }
  }

  // Predict + adapt: N tenants, one connection each, batch 16.
  for (const method of ['tent', 'continual']) {
    if (!only(`predict+adapt ${method}`)) continue;
    const { app, port } = await serve({ method });
    const feedback = method === 'continual';
    const spec: PhaseSpec = { name: `predict+adapt ${method}`, port, mode: 'closed', connections: tenants, tenants, maxRequests: 100000, maxSeconds: seconds * 2, encoding: 'base64', batch: 16, feedback };
    const sat = await ask(spec);
    const ort = await plain(16);
    const row: Record<string, unknown> = { phase: spec.name, round: 1, load: 'saturating (closed loop)', connections: tenants, tenants, ...sat, ortSamplesPerSecond: ort.samplesPerSecond, ratio: sat.samplesPerSecond / ort.samplesPerSecond };
    if (feedback) {
      // Every feedback request was answered before the client finished, so the server's count is final.
      row.serverAcceptedLabels = await metric(app, 'refit_feedback_labels_total', 'outcome="accepted"');
      row.lostFeedback = sat.feedback!.labelsSent - sat.feedback!.accepted;
    }
    await app.close();
    report(row);
  }
  child.kill();

  const out = {
    model: 'models/fmnist-cnn.onnx', seconds, tenants, command: `npx tsx bench/serve-load.ts ${process.argv.slice(2).join(' ')}`.trim(),
    plainOrt: 'onnxruntime-node InferenceSession on the same file, default options, timed before and after each phase',
    cpus: os.cpus().length, loadavg: os.loadavg(), node: process.version, onnxruntime: ort.env.versions.common, when: new Date().toISOString(), summary: summarize(results), results,
  };
  writeFileSync(new URL('./results/serve-load.json', import.meta.url), `${JSON.stringify(out, null, 2)}\n`);

  const f = (v: unknown, d = 0) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '–');
  console.log(`rounds ${rounds}, ${seconds} s per phase; medians over rounds; load average (1 min) during the phases ${f(Math.min(...results.map((r) => r.loadavg as number)), 1)}–${f(Math.max(...results.map((r) => r.loadavg as number)), 1)} on ${os.cpus().length} cores\n`);
  console.log('| phase | load | conns | samples/s | plain ORT samples/s | ratio | ratio per CPU-second | p50 ms | p99 ms | p99/p50 | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of out.summary) {
    console.log(`| ${r.phase} | ${r.load} | ${r.connections} | ${f(r.samplesPerSecond)} | ${f(r.ortSamplesPerSecond)} | ${f(r.ratio, 2)} | ${f(r.cpuRatio, 2)} | ${f(r.p50ms, 1)} | ${f(r.p99ms, 1)} | ${f(r.p99ms / r.p50ms, 2)} | ${r.errors} |`);
  }
  console.log('\nhalf load: the service against plain onnxruntime (the request batch size, the same fixed request rate, latency from when each run was due), medians:');
  for (const r of out.summary) {
    if (r.ortSameRate) console.log(`- ${r.phase}: service p50 ${f(r.p50ms, 1)} ms, p99 ${f(r.p99ms, 1)} ms (p99/p50 ${f(r.p99ms / r.p50ms, 2)}); plain ORT p50 ${f(r.ortSameRate.p50ms, 1)} ms, p99 ${f(r.ortSameRate.p99ms, 1)} ms (p99/p50 ${f(r.ortSameRate.p99ms / r.ortSameRate.p50ms, 2)})`);
  }
  type Quant = { p50ms: number; p99ms: number };
  for (const r of results as { phase: string; round: number; p50ms: number; p99ms: number; sendDelay?: Quant; halfServerSide?: { request: Quant; wait?: Quant; run?: Quant } }[]) {
    const h = r.halfServerSide;
    if (!h || !r.sendDelay) continue;
    const pq = (x: Quant) => `${f(x.p50ms, 1)} / ${f(x.p99ms, 1)}`;
    console.log(`- ${r.phase}, round ${r.round}, where the time went at half load (p50 / p99 ms; server side from its histograms): end to end ${pq(r)}; client sent late ${pq(r.sendDelay)}; in the server ${pq(h.request)}${h.wait ? `, of which waiting to be joined ${pq(h.wait)} and the run ${pq(h.run!)}` : ''}`);
  }
  for (const r of results as { phase: string; round: number; halfRunSizes?: Record<string, number> }[]) {
    if (!r.halfRunSizes) continue;
    const c = r.halfRunSizes, all = c['+Inf'] ?? 0;
    const over = (le: string) => (all ? f((100 * (all - (c[le] ?? 0))) / all, 1) : '–');
    console.log(`- ${r.phase}, round ${r.round}: ${all} joined runs at half load; over 4 samples ${over('4')}%, over 8 ${over('8')}%, over 16 ${over('16')}%`);
  }
  for (const r of out.summary) {
    if (r.ortAtRunBatch) console.log(`\n${r.phase}: onnxruntime runs averaged ${f(r.meanRunBatch, 1)} samples; against plain ORT at batch ${r.ortAtRunBatch.batch} (${f(r.ortAtRunBatch.samplesPerSecond)} samples/s) the service is ${f(r.ortAtRunBatch.ratio, 2)}, per CPU-second ${f(r.ortAtRunBatch.cpuRatio, 2)}`);
  }
  for (const r of results) {
    const fb = (r as { feedback?: PhaseResult['feedback'] }).feedback;
    if (fb) console.log(`\n${r.phase}: feedback ${fb.labelsSent} labels sent in ${fb.requests} requests, ${fb.accepted} accepted (server counted ${r.serverAcceptedLabels}), lost ${r.lostFeedback}, ${fb.errors} errors; feedback p50 ${f(fb.p50ms, 1)} ms, p99 ${f(fb.p99ms, 1)} ms`);
  }
}

/** Per phase and load: medians over rounds of each number; errors summed. */
function summarize(results: Record<string, unknown>[]) {
  const med = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
  const groups = new Map<string, Record<string, unknown>[]>();
  for (const r of results) {
    const k = `${r.phase}|${r.load}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((rs) => {
    const num = (k: string) => { const v = rs.map((r) => r[k]).filter((x): x is number => typeof x === 'number'); return v.length ? med(v) : undefined; };
    const at = rs.map((r) => r.ortAtRunBatch as { batch: number; samplesPerSecond: number; ratio: number; cpuRatio: number } | undefined).filter((x) => x !== undefined);
    return {
      phase: rs[0]!.phase as string, load: rs[0]!.load as string, connections: rs[0]!.connections as number, rounds: rs.length,
      requests: rs.reduce((a, r) => a + (r.requests as number), 0), errors: rs.reduce((a, r) => a + (r.errors as number), 0),
      samplesPerSecond: num('samplesPerSecond')!, ortSamplesPerSecond: num('ortSamplesPerSecond'), ratio: num('ratio'), cpuRatio: num('cpuRatio'),
      p50ms: num('p50ms')!, p99ms: num('p99ms')!, meanRunBatch: num('meanRunBatch'),
      ortSameRate: rs[0]!.ortSameRate ? (() => {
        const c = rs.map((r) => r.ortSameRate as { p50ms: number; p99ms: number });
        return { p50ms: med(c.map((x) => x.p50ms)), p99ms: med(c.map((x) => x.p99ms)) };
      })() : undefined,
      ortAtRunBatch: at.length ? { batch: med(at.map((a) => a.batch)), samplesPerSecond: med(at.map((a) => a.samplesPerSecond)), ratio: med(at.map((a) => a.ratio)), cpuRatio: med(at.map((a) => a.cpuRatio)) } : undefined,
    };
  });
}
