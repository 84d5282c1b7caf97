// Headless Chromium on a page that holds refit's web bundle (test/web/page-entry.ts), served from
// 127.0.0.1 with COOP/COEP so onnxruntime-web may use threads. For the browser tests and benches.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { buildWeb, type WebBuildOptions } from '../../scripts/build-web.ts';
import { serve, type Served, type ServeOptions } from '../../web/server.ts';

export const CHROMIUM = '/usr/bin/chromium';
export const chromiumMissing = existsSync(CHROMIUM) ? false : `${CHROMIUM} not installed (.ci/run installs it)`;
const root = fileURLToPath(new URL('../../', import.meta.url));

export interface TestPage {
  page: Page;
  url: string;
  /** Errors the page printed or threw (console.error, uncaught). */
  errors: string[];
  buildMs: number;
  close(): Promise<void>;
}

/**
 * Chromium flags that give headless Chromium WebGPU on SwiftShader's software (Vulkan) adapter, the
 * only one here; without them (the default, with --disable-gpu) requestAdapter() returns none.
 */
export const SOFTWARE_WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader'];

export async function openTestPage(routes?: ServeOptions['routes'], build: Pick<WebBuildOptions, 'webgpu'> = {}, gpuArgs?: string[]): Promise<TestPage> {
  const out = mkdtempSync(join(tmpdir(), 'refit-web-test-'));
  let server: Served | undefined;
  let browser: Browser | undefined;
  try {
    const built = await buildWeb({ entry: join(root, 'test/web/page-entry.ts'), outDir: out, ...build });
    writeFileSync(join(out, 'index.html'), '<!doctype html><meta charset=utf-8><link rel=icon href="data:,"><title>refit test page</title><script type=module src="/refit-web.js"></script>\n');
    server = await serve({ mounts: { '/': out, '/models/': join(root, 'models') }, ...(routes ? { routes } : {}) });
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', ...(gpuArgs ?? ['--disable-gpu']), '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(server.url);
    await page.waitForFunction(() => 'refitTest' in globalThis);
    const s = server, b = browser;
    return { page, url: server.url, errors, buildMs: built.ms, close: async () => { await b.close(); await s.close(); rmSync(out, { recursive: true, force: true }); } };
  } catch (e) {
    await browser?.close();
    await server?.close();
    rmSync(out, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Run `f(arg)` in the page: `f` travels as source text and `arg` as JSON. tsx wraps named functions
 * in __name(), which the page lacks, so the page gets an identity one.
 */
export function runInPage<A, T>(page: Page, f: (a: A) => Promise<T>, arg: A): Promise<T> {
  return page.evaluate(`(() => { const __name = (fn) => fn; return (${f.toString()})(${JSON.stringify(arg)}); })()`) as Promise<T>;
}

/** Float32 values from the page's base64. */
export function fromB64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
