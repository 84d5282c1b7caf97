// Bundles refit's browser entry (src/web.ts) with esbuild into dist-web/: refit-web.js (ESM, with
// onnxruntime-web's wasm-only build inside), refit-web-webgpu.js (its WebGPU build), and each one's
// wasm binary next to it, where onnxruntime-web looks by default. `npm run build:web`;
// test/web/*.test.ts call buildWeb() too.
//
// Two modules read files through node:fs in Node and are imported by browser-safe code
// (model.ts → onnx/io.ts for loadModel(path), tta/index.ts → tta/source-data.ts); the bundle maps
// them to src/web/node-only/ stand-ins that throw a message saying what to use in a page.
// Every other Node module reached from the entry fails the build.
import * as esbuild from 'esbuild';
import { builtinModules, createRequire } from 'node:module';
import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Node-only module (relative to the repository root) → its browser stand-in. */
export const NODE_ONLY_STANDINS: Readonly<Record<string, string>> = {
  'src/onnx/io.ts': 'src/web/node-only/io.ts',
  'src/tta/source-data.ts': 'src/web/node-only/source-data.ts',
};

/** Packages that must never be in the web bundle, besides Node's builtins. */
export const NODE_ONLY_PACKAGES = ['onnxruntime-node'];

/** onnxruntime-web's default ESM bundle (wasm + WebGPU) loads this binary from its own folder. */
export const ORT_WASM = 'ort-wasm-simd-threaded.jsep.wasm';
/** The binary of its wasm-only bundle. */
export const ORT_WASM_ONLY = 'ort-wasm-simd-threaded.wasm';

export interface NodeOnlyImport {
  path: string;
  importer: string;
}

export interface WebBuildResult {
  outDir: string;
  bundle: string;
  bytes: number;
  ms: number;
  /** Every source file in the bundle, relative to the repository root. */
  inputs: string[];
  /** Node-only imports the entry reached (empty on success; the build throws otherwise unless collectOnly). */
  nodeOnly: NodeOnlyImport[];
}

export interface WebBuildOptions {
  outDir?: string;
  entry?: string;
  minify?: boolean;
  sourcemap?: boolean;
  /** Report Node-only imports instead of failing (the import-graph test uses it to name them all). */
  collectOnly?: boolean;
  /** Skip writing files (graph check only). */
  write?: boolean;
  /**
   * Bundle onnxruntime-web's WebGPU-capable build instead of its wasm-only build
   * ('onnxruntime-web/wasm', the default). The WebGPU build (JSEP) ran the shipped ViT's LoRA step
   * on wasm at about half the speed of the wasm-only one (214 vs 111 ms, Chromium, 1 thread,
   * bench/web-step.ts) and warms up slower, so WebGPU is a separate bundle.
   */
  webgpu?: boolean;
  /** The bundle's file name (default refit-web.js). */
  name?: string;
}

const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

function isNodeOnly(spec: string): boolean {
  if (spec.startsWith('node:') || builtins.has(spec) || builtins.has(spec.split('/')[0]!)) return true;
  return NODE_ONLY_PACKAGES.some((p) => spec === p || spec.startsWith(`${p}/`));
}

export async function buildWeb(opts: WebBuildOptions = {}): Promise<WebBuildResult> {
  const outDir = resolve(root, opts.outDir ?? 'dist-web');
  const entry = resolve(root, opts.entry ?? 'src/web.ts');
  const nodeOnly: NodeOnlyImport[] = [];
  const standins = new Map(Object.entries(NODE_ONLY_STANDINS).map(([from, to]) => [resolve(root, from), resolve(root, to)]));
  const plugin: esbuild.Plugin = {
    name: 'refit-web',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (a) => {
        if (isNodeOnly(a.path)) {
          nodeOnly.push({ path: a.path, importer: relative(root, a.importer) });
          return { path: a.path, external: true };
        }
        if (a.path.startsWith('.') && a.importer) {
          const target = standins.get(resolve(dirname(a.importer), a.path));
          if (target) return { path: target };
        }
        return undefined;
      });
      // jpeg-js's encoder (the jpeg_compression corruption) returns Buffer.from(bytes) whenever
      // `module` exists, which it does inside a bundle; a page has no Buffer, and a Uint8Array is
      // all refit reads from it.
      b.onLoad({ filter: /jpeg-js[\\/]lib[\\/]encoder\.js$/ }, async (a) => ({
        contents: `var Buffer = { from: (a) => Uint8Array.from(a) };\n${await readFile(a.path, 'utf8')}`,
        loader: 'js',
      }));
    },
  };
  const t0 = performance.now();
  const bundle = join(outDir, opts.name ?? 'refit-web.js');
  const webgpu = opts.webgpu === true;
  const r = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile: bundle,
    minify: opts.minify ?? false,
    sourcemap: opts.sourcemap ?? false,
    metafile: true,
    write: opts.write ?? true,
    logLevel: 'silent',
    plugins: [plugin],
    ...(webgpu ? {} : { alias: { 'onnxruntime-web': 'onnxruntime-web/wasm' } }),
    define: { REFIT_WEB_WEBGPU: String(webgpu) },
  });
  if (nodeOnly.length && !opts.collectOnly) {
    throw new Error(`the web entry reaches Node-only modules:\n${nodeOnly.map((n) => `  ${n.path} (imported by ${n.importer})`).join('\n')}`);
  }
  if (opts.write ?? true) {
    mkdirSync(outDir, { recursive: true });
    const file = webgpu ? ORT_WASM : ORT_WASM_ONLY;
    copyFileSync(createRequire(import.meta.url).resolve(`onnxruntime-web/${file}`), join(outDir, file));
  }
  const inputs = Object.keys(r.metafile.inputs).map((p) => relative(root, resolve(root, p)));
  const bytes = opts.write ?? true ? statSync(bundle).size : Object.values(r.metafile.outputs).reduce((s, o) => s + o.bytes, 0);
  return { outDir, bundle, bytes, ms: performance.now() - t0, inputs, nodeOnly };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const common = { minify: process.argv.includes('--minify'), sourcemap: process.argv.includes('--sourcemap') };
  for (const [webgpu, name] of [[false, 'refit-web.js'], [true, 'refit-web-webgpu.js']] as const) {
    const r = await buildWeb({ ...common, webgpu, name });
    console.log(`${relative(root, r.bundle)}: ${(r.bytes / 1024).toFixed(0)} KiB from ${r.inputs.length} files in ${r.ms.toFixed(0)} ms (+ ${webgpu ? ORT_WASM : ORT_WASM_ONLY})`);
  }
}
