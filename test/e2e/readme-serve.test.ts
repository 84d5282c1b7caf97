// The README's `refit serve` block runs as written: the server starts as the block starts it
// (on a free port instead of 8080), every curl line runs through bash with the block's
// environment, each answer is checked, and `kill %1` stops the server cleanly. A line this test
// does not know fails it, so the README cannot grow an example that nothing runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { readmeBlock } from '../helpers/readme.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('the request files are the first bundled test image (examples/serve/make-requests.ts)', () => {
  const image = Array.from(loadFashionMnist('test', { limit: 1 }).images.subarray(0, 784));
  const json = JSON.parse(readFileSync(join(root, 'examples/serve/predict.json'), 'utf8'));
  assert.deepEqual(json.inputs, { dims: [1, 1, 28, 28], data: image });
  const b64 = JSON.parse(readFileSync(join(root, 'examples/serve/predict-base64.json'), 'utf8'));
  const bytes = Buffer.from(b64.inputs.base64, 'base64');
  assert.deepEqual(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, 784)), image);
});

test("README: the service section's block runs as written and every answer is right", { skip: existsSync('/usr/bin/curl') ? false : 'curl is not installed' }, async () => {
  const lines = readmeBlock('## Running the service');
  const cwd = mkdtempSync(join(tmpdir(), 'refit-readme-serve-'));
  for (const d of ['models', 'examples']) symlinkSync(join(root, d), join(cwd, d));
  const env: Record<string, string> = { ...process.env as Record<string, string> };
  let server: ReturnType<typeof spawn> | undefined;
  let port = 0;
  let stderr = '';
  const exited = () => new Promise<number | null>((res) => server!.once('exit', (code) => res(code)));
  const curl = (l: string) => execFileSync('bash', ['-c', l.replace(/localhost:8080/g, `127.0.0.1:${port}`)], { cwd, env, encoding: 'utf8', timeout: 30000 });
  const seen = new Set<string>();
  try {
    for (const l of lines) {
      let m: RegExpExecArray | null;
      if ((m = /^export (\w+)=(\S+)$/.exec(l))) {
        env[m[1]!] = m[2]!;
        seen.add('export');
      } else if (l.startsWith('npx refit serve ')) {
        assert.match(l, /--port 8080 &$/, 'the server line ends with --port 8080 & (the test swaps in a free port)');
        const args = l.slice('npx refit '.length, -1).trim().replace('--port 8080', '--port 0').split(/\s+/);
        server = spawn(process.execPath, [join(root, 'bin/refit.js'), ...args], { cwd, env });
        server.stderr!.on('data', (d) => (stderr += d));
        port = await new Promise<number>((res, rej) => {
          const t = setTimeout(() => rej(new Error(`refit serve did not start in 60 s:\n${stderr}`)), 60000);
          server!.stderr!.on('data', () => {
            const p = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
            if (p) { clearTimeout(t); res(Number(p[1])); }
          });
          server!.once('exit', (code) => rej(new Error(`refit serve exited with ${code}:\n${stderr}`)));
        });
        assert.match(stderr, /adaptation: tent; registry: adapters\.sqlite; token needed for writes, reads open/);
        seen.add('serve');
      } else if (l.startsWith('curl ')) {
        const out = curl(l);
        if (/\/healthz$/.test(l)) {
          assert.deepEqual({ ...JSON.parse(out), uptimeSeconds: 0 }, { status: 'ok', models: ['cnn'], method: 'tent', tenants: 0, uptimeSeconds: 0 });
          seen.add('healthz');
        } else if (/\/predict .*-d @examples\/serve\/predict(-base64)?\.json$/.test(l)) {
          const r = JSON.parse(out);
          assert.equal(r.tenant, 'shop-1', out);
          assert.deepEqual(r.predictions, [9], 'the shipped CNN calls the first test image an ankle boot');
          assert.equal(r.probabilities[0].length, 10);
          assert.ok(Math.abs(r.probabilities[0].reduce((a: number, v: number) => a + v, 0) - 1) < 1e-5, out);
          assert.equal(r.adaptation.used, 1, 'Tent adapted on the sample');
          seen.add(l.includes('base64') ? 'predict-base64' : 'predict');
        } else if (/\/tenants$/.test(l)) {
          assert.deepEqual(JSON.parse(out).active, [{ tenant: 'shop-1' }]);
          seen.add('tenants');
        } else if (/-X DELETE \S+\/tenants\/shop-1$/.test(l)) {
          assert.equal(JSON.parse(out).statusCode, 401, out);
          seen.add('delete-401');
        } else if (/-X DELETE \S+\/tenants\/shop-1 -H "authorization: Bearer \$REFIT_TOKEN"$/.test(l)) {
          assert.deepEqual(JSON.parse(out), { model: 'cnn', tenant: 'shop-1', sessions: 1, saved: false });
          seen.add('delete');
        } else if (/\/metrics \| grep/.test(l)) {
          assert.equal(out.trim(), 'refit_predicted_samples_total{model="cnn",method="tent"} 2');
          seen.add('metrics');
        } else assert.fail(`a curl line in the README that this test does not check: ${l}`);
      } else if (l === 'kill %1') {
        const code = exited();
        server!.kill('SIGTERM');
        assert.equal(await code, 0, stderr);
        assert.match(stderr, /refit serve: stopped/);
        assert.ok(existsSync(join(cwd, 'adapters.sqlite')));
        server = undefined;
        seen.add('kill');
      } else assert.fail(`a line in the README's service block that this test does not run: ${l}`);
    }
    assert.deepEqual([...seen].sort(), ['delete', 'delete-401', 'export', 'healthz', 'kill', 'metrics', 'predict', 'predict-base64', 'serve', 'tenants']);
  } finally {
    server?.kill('SIGKILL');
    rmSync(cwd, { recursive: true, force: true });
  }
});
