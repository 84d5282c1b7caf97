// The HTML report says what produced it: the exact command line and the versions of refit,
// Node and onnxruntime-node (from their package.json), from `refit adapt --report` as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderReport, runProvenance } from '../../src/report/html.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pkg = (p: string) => (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version;
const refitVersion = pkg(join(root, 'package.json'));
const ortVersion = pkg(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));

test('runProvenance: argv quoted for a shell, versions from the package.json files', () => {
  const p = runProvenance(['/usr/bin/node', 'bin/refit.js', 'adapt', 'm.onnx', '--stream', 'my data/x.npy', "it's"]);
  assert.equal(p.command, `/usr/bin/node bin/refit.js adapt m.onnx --stream 'my data/x.npy' 'it'\\''s'`);
  assert.equal(p.refit, refitVersion);
  assert.equal(p.node, process.versions.node);
  assert.equal(p.onnxruntime, ortVersion);
  assert.match(p.onnxruntime, /^\d+\.\d+\.\d+/);
});

test('renderReport shows the provenance line escaped, and none when not given', () => {
  const score = { method: 'source', batchErrors: [0.5], domains: [{ domain: 'd', severity: 0, round: 0, error: 0.5, samples: 4 }], meanError: 0.5, msPerBatch: 0, firstBatchMs: 0, skipped: 0 };
  const base = { title: 't', subtitle: 's', scores: [score], boundaries: [{ batch: 0, domain: 'd' }] };
  const html = renderReport({ ...base, provenance: { command: 'refit adapt <x> & "y"', refit: '1.2.3', node: '20.0.0', onnxruntime: '1.20.0' } });
  assert.match(html, /<div class="prov" id="provenance"><code>refit adapt &lt;x&gt; &amp; &quot;y&quot;<\/code><br>refit 1\.2\.3 · Node 20\.0\.0 · onnxruntime-node 1\.20\.0<\/div>/);
  assert.doesNotMatch(renderReport(base), /id="provenance"/);
});

test('refit adapt --report writes the exact command and the versions into the report', () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-report-'));
  const fm = loadFashionMnist('test', { limit: 32 });
  const npy = (descr: string, shape: number[], data: ArrayBufferView) => {
    let h = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
    h = h.padEnd(Math.ceil((h.length + 11) / 64) * 64 - 11, ' ') + '\n';
    const hb = new TextEncoder().encode(h);
    const out = new Uint8Array(10 + hb.length + data.byteLength);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, hb.length & 0xff, hb.length >> 8]);
    out.set(hb, 10);
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + hb.length);
    return out;
  };
  writeFileSync(join(dir, 'x.npy'), npy('<f4', [32, 1, 28, 28], fm.images));
  writeFileSync(join(dir, 'y.npy'), npy('<i8', [32], BigInt64Array.from(fm.labels, (v) => BigInt(v))));
  const args = ['adapt', join(root, 'models/fmnist-cnn.onnx'), '--method', 'tent', '--stream', join(dir, 'x.npy'), '--labels', join(dir, 'y.npy'), '--batch-size', '16', '--out', join(dir, 'p.csv'), '--report', join(dir, 'r.html'), '--json'];
  const r = spawnSync(process.execPath, [join(root, 'bin/refit.js'), ...args], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const html = readFileSync(join(dir, 'r.html'), 'utf8');
  const line = /<div class="prov" id="provenance"><code>([^<]*)<\/code><br>([^<]*)<\/div>/.exec(html);
  assert.ok(line, 'no provenance line in the report');
  assert.equal(line[1], [process.execPath, join(root, 'bin/refit.js'), ...args].join(' '));
  assert.equal(line[2], `refit ${refitVersion} · Node ${process.versions.node} · onnxruntime-node ${ortVersion}`);
});
