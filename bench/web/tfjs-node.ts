// TensorFlow.js with the wasm backend in Node, for bench/web-bench.ts and test/web/tfjs-vit.test.ts:
// bench/web/tfjs-entry.ts bundled by esbuild as CommonJS into a temporary folder next to
// tfjs-backend-wasm's binaries (tfjs-core's ESM dist cannot be imported by Node directly).
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const TFJS_WASM_DIR = resolve(here, '../../node_modules/@tensorflow/tfjs-backend-wasm/dist');
export const TFJS_WASM = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];

export type TfjsModule = typeof import('./tfjs-entry.ts');

/** Loads tfjs (wasm backend ready) from a bundle written into `dir`; remove `dir` when done. */
export async function loadTfjsNode(dir: string): Promise<TfjsModule> {
  mkdirSync(dir, { recursive: true });
  await esbuild.build({ entryPoints: [join(here, 'tfjs-entry.ts')], bundle: true, platform: 'node', format: 'cjs', outfile: join(dir, 'tfjs.cjs'), logLevel: 'error' });
  for (const f of TFJS_WASM) copyFileSync(join(TFJS_WASM_DIR, f), join(dir, f));
  const m = createRequire(import.meta.url)(join(dir, 'tfjs.cjs')) as TfjsModule;
  m.setWasmPaths(dir + '/');
  if (!(await m.tf.setBackend('wasm'))) throw new Error('tfjs: the wasm backend failed to start in Node');
  return m;
}

export const removeDir = (dir: string) => rmSync(dir, { recursive: true, force: true });
