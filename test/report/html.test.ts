// The HTML report says what produced it: the exact command line and the versions of refit,
// Node and onnxruntime-node (from their package.json), from `refit adapt --report` as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderReport, runProvenance } from '../../src/report/html.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { npy } from '../helpers/cli.ts';

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

/** The data object the report's script draws from. */
const reportData = (html: string) => JSON.parse(/const D = (\{.*\});\n/.exec(html)![1]!) as { levels: { label: string; data: number[]; alarms: (number | null)[] }[]; stream: unknown[] };

test('the controller timeline: levels per batch, each drift alarm on the batch that raised it', () => {
  const score = { method: 'continual', batchErrors: [0.1, 0.2, 0.5, 0.3, 0.2], domains: [{ domain: 'd', severity: 0, round: 0, error: 0.26, samples: 20 }], meanError: 0.26, msPerBatch: 0, firstBatchMs: 0, skipped: 0, levels: [1, 1, 2, 3, 3], drifts: [2] };
  const html = renderReport({ title: 't', subtitle: 's', scores: [score], boundaries: [{ batch: 0, domain: 'd' }] });
  const D = reportData(html);
  assert.deepEqual(D.levels, [{ label: 'continual level', data: [1, 1, 2, 3, 3], alarms: [null, null, 2, null, null] }]);
  assert.match(html, /<canvas id="levels">/);
  const { levels: _l, drifts: _d, ...plain } = score;
  assert.doesNotMatch(renderReport({ title: 't', subtitle: 's', scores: [plain], boundaries: [] }), /<canvas id="levels">/);
});

test('refit adapt --report writes the exact command and the versions into the report', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-report-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fm = loadFashionMnist('test', { limit: 32 });

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
  assert.deepEqual(reportData(html).levels, [], 'a TTA method has no controller timeline');
  // The continual controller: its level per batch on the timeline.
  const cont = args.map((a) => (a === 'tent' ? 'continual' : a.endsWith('r.html') ? join(dir, 'c.html') : a));
  const c = spawnSync(process.execPath, [join(root, 'bin/refit.js'), ...cont], { cwd: root, encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  const out = JSON.parse(c.stdout) as { levels: Record<string, number> };
  const D = reportData(readFileSync(join(dir, 'c.html'), 'utf8'));
  assert.equal(D.levels.length, 1);
  assert.equal(D.levels[0]!.data.length, 2, 'one level per batch (32 samples in batches of 16)');
  assert.equal(D.levels[0]!.alarms.length, 2);
  assert.equal(Object.values(out.levels).reduce((a, b) => a + b, 0), 2);
});
