// diagnoseTraining: which parameter groups can train and what blocks the others, by a graph
// walk alone (no onnxruntime), on real exports and on a synthetic graph with unknown ops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeModel } from '../../src/onnx/proto.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { diagnoseTraining } from '../../src/autodiff/diagnose.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const fixture = (p: string) => decodeModel(readFileSync(new URL(`../fixtures/${p}/model.onnx`, import.meta.url)));

test('real exports: every group of the torch fixtures trains, grouped by the layer that reads it', () => {
  const cnn = diagnoseTraining(fixture('torch/cnn'));
  assert.deepEqual(cnn.groups.map((g) => [g.name, g.params.length, g.trainable]), [
    ['conv weights', 6, true], ['linear weights', 1, true], ['norm affine', 12, true], ['biases', 1, true],
  ]);
  assert.deepEqual(cnn.unsupportedOps, []);
  assert.equal(cnn.opCounts.Conv, 6);
  const tr = diagnoseTraining(fixture('torch/transformer'));
  const names = Object.fromEntries(tr.groups.map((g) => [g.name, g.params]));
  assert.ok(names.embeddings!.includes('tok_emb.weight'));
  assert.ok(names['norm affine']!.includes('blocks.0.ln1.bias'));
  assert.ok(names['linear weights']!.includes('blocks.1.attn.q.weight'));
  assert.ok(tr.groups.every((g) => g.trainable && g.blockers.length === 0));
});

test('LSTM exports: recurrent weights are trainable by lowering, and the lowered nodes are listed', () => {
  const d = diagnoseTraining(fixture('recurrent/lstm'));
  const rec = d.groups.find((g) => g.name === 'recurrent weights')!;
  assert.equal(rec.params.length, 16);
  assert.ok(rec.trainable);
  assert.deepEqual(d.lowered, [{ opType: 'LSTM', nodes: ['/rnn/LSTM', '/rnn/LSTM_1'] }]);
});

/** conv → unknown custom op → ... → Gemm; an embedding through Det; an LSTM with clip. */
function synthetic() {
  const b = new ModelBuilder({ opset: 17 });
  b.model.opsets.push({ domain: 'com.example', version: 1 });
  const z = (d: number[]) => f32(d, new Float32Array(d.reduce((a, c) => a * c, 1)).fill(0.1));
  b.input('x', 'float32', [2, 3, 4, 4]).input('ids', 'int64', [2, 3]);
  b.initializer('conv.weight', z([3, 3, 3, 3])).initializer('conv.bias', z([3]));
  b.initializer('fc.weight', z([5, 48])).initializer('fc.bias', z([5]));
  b.initializer('emb.weight', z([10, 3]));
  b.initializer('lstm.W', z([1, 20, 3])).initializer('lstm.R', z([1, 20, 5]));
  b.node('Conv', ['x', 'conv.weight', 'conv.bias'], ['c'], { pads: [1, 1, 1, 1] }, 'conv');
  b.node('Fancy', ['c'], ['f'], {}, 'fancy');
  b.model.graph.nodes.at(-1)!.domain = 'com.example';
  b.node('Relu', ['f'], ['r']);
  b.node('Flatten', ['r'], ['fl']);
  b.node('Gemm', ['fl', 'fc.weight', 'fc.bias'], ['logits'], { transB: 1 }, 'fc');
  b.node('Gather', ['emb.weight', 'ids'], ['e'], {}, 'emb');       // [2, 3, 3]
  b.node('Det', ['e'], ['det'], {}, 'det');                        // [2]
  b.node('Transpose', ['e'], ['et'], { perm: [1, 0, 2] });
  b.node('LSTM', ['et', 'lstm.W', 'lstm.R'], ['', 'h'], { hidden_size: 5, clip: 1.5 }, 'lstm');
  b.node('Shape', ['logits'], ['shape']);                          // no gradient: never a blocker
  b.output('logits').output('det').output('h').output('shape', 'int64');
  return b.build();
}

test('synthetic graph: each group names the ops without rules on its own path, with nodes and reasons', () => {
  const d = diagnoseTraining(synthetic());
  const by = Object.fromEntries(d.groups.map((g) => [g.name, g]));
  assert.deepEqual(Object.keys(by), ['conv weights', 'linear weights', 'recurrent weights', 'biases', 'embeddings']);
  assert.deepEqual(by['conv weights']!.blockers, [{ opType: 'Fancy', domain: 'com.example', nodes: ['fancy'] }]);
  assert.equal(by['linear weights']!.trainable, true);
  assert.deepEqual(by.biases!.params, ['conv.bias', 'fc.bias']);
  assert.deepEqual(by.biases!.blockers.map((b) => b.opType), ['Fancy'], 'the conv bias is blocked, the fc bias not');
  const emb = by.embeddings!;
  assert.equal(emb.trainable, false);
  assert.deepEqual(emb.blockers.map((b) => b.opType).sort(), ['Det', 'LSTM'], 'the embedding feeds Det and the clipped LSTM');
  const rec = by['recurrent weights']!;
  assert.equal(rec.blockers.length, 1);
  assert.match(rec.blockers[0]!.reason!, /clip=1.5 is not supported/);
  assert.deepEqual(d.unsupportedOps.map((u) => [u.opType, u.groups.sort()]), [
    ['Det', ['embeddings']], ['Fancy', ['biases', 'conv weights']], ['LSTM', ['embeddings', 'recurrent weights']],
  ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));
  assert.equal(d.opCounts['com.example:Fancy'], 1);
  assert.deepEqual(d.lowered, [], 'a refused LSTM is not listed as lowered');
  assert.ok(d.summary.some((l) => /^conv weights \(1\): blocked by com\.example:Fancy ×1$/.test(l)), d.summary.join('\n'));
});

test('options: chosen parameters, chosen targets, custom groups', () => {
  const d = diagnoseTraining(synthetic(), { params: ['conv.weight', 'fc.weight'], targets: ['logits'], groupOf: (p) => p.split('.')[0]! });
  assert.deepEqual(d.groups.map((g) => [g.name, g.trainable]), [['conv', false], ['fc', true]]);
  const unreached = diagnoseTraining(synthetic(), { params: ['emb.weight'], targets: ['logits'] });
  assert.deepEqual(unreached.groups[0]!.unreached, ['emb.weight']);
  assert.equal(unreached.groups[0]!.trainable, false);
});
