// Starting a worker thread on one of refit's own modules, from the compiled package (.js) or
// from the TypeScript sources run through tsx. Node 20 workers do not inherit the parent's
// module hooks, so from sources the worker registers tsx's loader itself before importing.
import { Worker } from 'node:worker_threads';

/** A worker running the module `name` (without extension) beside `from` (the caller's import.meta.url). */
export function startModuleWorker(from: string, name: string, workerData: unknown): Worker {
  if (from.endsWith('.ts')) {
    const api = import.meta.resolve('tsx/esm/api');
    const entry = new URL(`./${name}.ts`, from).href;
    const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(code, { eval: true, workerData });
  }
  return new Worker(new URL(`./${name}.js`, from), { workerData });
}
