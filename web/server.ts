// A small static server for refit's web pages (the demo, the browser tests): files from a few
// folders, on 127.0.0.1, with the COOP/COEP headers that make the page cross-origin isolated, so
// onnxruntime-web may use threads (without them it silently runs one).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css', '.map': 'application/json',
  '.onnx': 'application/octet-stream', '.gz': 'application/octet-stream', '.png': 'image/png', '.safetensors': 'application/octet-stream',
};

export interface ServeOptions {
  /** URL prefix ('/', '/models/') → folder. The longest matching prefix wins. */
  mounts: Record<string, string>;
  port?: number;
  /** Send COOP: same-origin and COEP: require-corp (default true). */
  isolated?: boolean;
  /** Exact paths answered by a handler instead of a file (tests: a body cut off halfway). */
  routes?: Record<string, (req: IncomingMessage, res: ServerResponse, headers: Record<string, string>) => void>;
}

export interface Served {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<Served> {
  const mounts = Object.entries(opts.mounts).map(([p, d]) => [p, resolve(d)] as const).sort((a, b) => b[0].length - a[0].length);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const m = mounts.find(([p]) => path.startsWith(p));
    const headers: Record<string, string> = { 'Cache-Control': 'no-store' };
    if (opts.isolated !== false) Object.assign(headers, { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' });
    const route = opts.routes?.[path];
    if (route) return route(req, res, headers);
    let file = m ? normalize(join(m[1], path.slice(m[0].length) || 'index.html')) : '';
    if (m && !file.startsWith(m[1] + sep) && file !== m[1]) file = '';
    let size = -1;
    try {
      const st = file ? statSync(file) : undefined;
      if (st?.isDirectory()) file = join(file, 'index.html');
      size = statSync(file).size;
    } catch { /* 404 below */ }
    if (size < 0) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': String(size) });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(opts.port ?? 0, '127.0.0.1', () => ok()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  return { url: `http://127.0.0.1:${port}/`, server, close: () => new Promise((ok) => { server.closeAllConnections(); server.close(() => ok()); }) };
}

/**
 * A route (for ServeOptions.routes) that sends `file` with its full Content-Length, then closes the
 * connection after `fraction` of the body: a model fetch that fails halfway, for the tests.
 */
export function cutOffHalfway(file: string, fraction = 0.5): NonNullable<ServeOptions['routes']>[string] {
  return (_req, res, headers) => {
    const bytes = readFileSync(file);
    res.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.length) });
    res.write(bytes.subarray(0, Math.floor(bytes.length * fraction)), () => setTimeout(() => res.socket?.destroy(), 50));
  };
}
