// The browser entry (src/web.ts) must not reach a Node-only module: fs, path, worker_threads,
// child_process, onnxruntime-node or any node: builtin. esbuild walks the real import graph (the
// same build as `npm run build:web`), so a new import anywhere below the entry is caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildWeb, NODE_ONLY_STANDINS } from '../../scripts/build-web.ts';

test('the web entry reaches no Node builtin and not onnxruntime-node', async () => {
  const r = await buildWeb({ write: false, collectOnly: true });
  assert.deepEqual(r.nodeOnly, [], `Node-only imports:\n${r.nodeOnly.map((n) => `${n.path} <- ${n.importer}`).join('\n')}`);
  assert.ok(!r.inputs.some((i) => /onnxruntime-node/.test(i)), 'onnxruntime-node is in the bundle');
  assert.ok(r.inputs.some((i) => /onnxruntime-web/.test(i)), 'onnxruntime-web is not in the bundle');
  // The core, PEFT, TTA and continual parts are there, and the Node file modules are not (their stand-ins are).
  for (const f of ['src/model.ts', 'src/train/train-step.ts', 'src/peft/lora/index.ts', 'src/tta/tent.ts', 'src/continual/controller.ts', 'src/onnx/runtime-web.ts', ...Object.values(NODE_ONLY_STANDINS)]) {
    assert.ok(r.inputs.includes(f), `${f} is not in the web bundle`);
  }
  for (const f of ['src/onnx/runtime-node.ts', ...Object.keys(NODE_ONLY_STANDINS), 'src/peft/files-node.ts', 'src/data/idx-node.ts']) {
    assert.ok(!r.inputs.includes(f), `${f} is in the web bundle`);
  }
});

test('the check catches a Node import: an entry that pulls in the Node entry fails, naming the chain', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-web-graph-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const entry = join(dir, 'entry.ts');
  writeFileSync(entry, `export * from ${JSON.stringify(new URL('../../src/index.ts', import.meta.url).pathname)};\n`);
  const r = await buildWeb({ write: false, collectOnly: true, entry });
  const found = r.nodeOnly.map((n) => `${n.path} <- ${n.importer}`);
  assert.ok(found.includes('onnxruntime-node <- src/onnx/runtime-node.ts'), found.join('\n'));
  assert.ok(found.includes('node:fs <- src/peft/files-node.ts'), found.join('\n'));
  await assert.rejects(buildWeb({ write: false, entry }), /the web entry reaches Node-only modules:\n {2}\S+ \(imported by /);
});
