// The browser side of test/web/equality.test.ts and bench/web-step.ts: refit's web entry plus the
// shared cases, exposed on window for page.evaluate. Gradients come back as base64 float32 bytes.
import * as refit from '../../src/web.ts';
import { runtime } from '../../src/onnx/runtime.ts';
import { runCase, reluMargin, prepare, batchOf, type CaseSpec, type RunOptions } from './cases.ts';

function b64(a: Float32Array): string {
  const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = '';
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  return btoa(s);
}

const models = new Map<string, Promise<Uint8Array>>();
const modelBytes = (m: string) => {
  if (!models.has(m)) models.set(m, refit.fetchBytes(`/models/fmnist-${m}.onnx`));
  return models.get(m)!;
};

const open = new Map<number, () => Promise<unknown>>();

const api = {
  refit,
  /** The backend in use (test/web/webgpu-gradients.test.ts swaps in a copy without its grouped-Conv fault). */
  runtime,
  /** useWebRuntime; with `warm`, then warmUp (its ms as warmMs). */
  async setup(opts: refit.WebRuntimeOptions & { warm?: boolean }) {
    const { warm, ...o } = opts;
    const info = await refit.useWebRuntime(o);
    return warm ? { ...info, warmMs: await refit.warmUp() } : info;
  },
  async run(c: CaseSpec, o: RunOptions = {}) {
    const r = await runCase(refit, await modelBytes(c.model), c, o);
    return { ...r, grads: Object.fromEntries(Object.entries(r.grads).map(([k, v]) => [k, b64(v)])), reluInputs: r.reluInputs && b64(r.reluInputs) };
  },
  margin: async (c: CaseSpec) => reluMargin(refit, await modelBytes(c.model), c),
  /** Prepare a step for timing; returns its id and the first run's time (build + session + step). */
  async open(c: CaseSpec, session: refit.SessionOptions = {}) {
    const { step } = await prepare(refit, await modelBytes(c.model), c, undefined, session);
    const batch = batchOf(refit, c);
    const t = performance.now();
    await step.run(batch);
    const firstMs = performance.now() - t;
    const { graph } = await step.compile({ x: { dtype: 'float32', dims: [...batch.x.dims] } });
    const id = open.size;
    open.set(id, () => step.run(batch));
    return { id, firstMs, timings: { ...graph.timings } };
  },
  async time(id: number) {
    const t = performance.now();
    await open.get(id)!();
    return performance.now() - t;
  },
};
(globalThis as unknown as { refitTest: typeof api }).refitTest = api;
