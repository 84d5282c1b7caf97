// `npm run web`: bundles the demo (web/demo.ts → dist-web/demo/) and serves it on 127.0.0.1 with
// COOP/COEP (threads), with the shipped models and Fashion-MNIST files. --port N (default 8080).
import { fileURLToPath } from 'node:url';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildWeb } from '../scripts/build-web.ts';
import { cutOffHalfway, serve } from './server.ts';

const root = fileURLToPath(new URL('../', import.meta.url));

/** Build the demo into `outDir` (demo.js, index.html, the onnxruntime-web wasm). */
export async function buildDemo(outDir = join(root, 'dist-web/demo')): Promise<string> {
  mkdirSync(outDir, { recursive: true });
  await buildWeb({ entry: join(root, 'web/demo.ts'), outDir });
  copyFileSync(join(outDir, 'refit-web.js'), join(outDir, 'demo.js'));
  copyFileSync(join(root, 'web/index.html'), join(outDir, 'index.html'));
  return outDir;
}

/**
 * Serve a built demo with the models and data it fetches. `testRoutes` adds /test/cut/fmnist-vit.onnx,
 * the ViT cut off halfway (the page's ?vit= points at it in the bad-input test).
 */
export function serveDemo(outDir: string, port?: number, opts: { testRoutes?: boolean } = {}) {
  return serve({
    mounts: { '/': outDir, '/models/': join(root, 'models'), '/data/': join(root, 'data/fashion-mnist') },
    ...(port !== undefined ? { port } : {}),
    ...(opts.testRoutes ? { routes: { '/test/cut/fmnist-vit.onnx': cutOffHalfway(join(root, 'models/fmnist-vit.onnx')) } } : {}),
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const i = process.argv.indexOf('--port');
  const s = await serveDemo(await buildDemo(), i > 0 ? Number(process.argv[i + 1]) : 8080);
  console.log(`refit demo: ${s.url} (Ctrl-C stops)`);
}
