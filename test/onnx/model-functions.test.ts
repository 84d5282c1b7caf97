// Model-local ONNX functions (ModelProto.functions), inlined on load: a torch.onnx export with
// export_modules_as_functions (test/fixtures/exports/make_exports.py) trains with PyTorch's
// gradients, and hand-written functions with attribute references, defaults (IR 9
// attribute_proto, a field onnx-proto does not know), unused outputs and calls inside an If
// branch compute what onnxruntime computes from the original bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import protobuf from 'protobufjs/minimal.js';
import onnxProto from 'onnx-proto';
import { loadModel } from '../../src/model.ts';
import { decodeModel } from '../../src/onnx/proto.ts';
import { ort } from '../../src/onnx/runtime.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import * as losses from '../../src/train/losses.ts';
import { findNormLayers } from '../../src/onnx/norm-layers.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { relErr } from '../helpers/close.ts';

const { onnx } = onnxProto;
const FIX = new URL('../fixtures/exports/modules_as_functions/', import.meta.url).pathname;

/** onnxruntime's outputs for the original bytes (it inlines functions itself). */
async function ortRun(bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], logSeverityLevel: 3 });
  const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new ort.Tensor(t.dtype as 'float32', t.data as Float32Array, t.dims)])));
  await s.release();
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
}

test('a torch.onnx export with modules as functions (nested, with an attribute reference) loads flat and trains with PyTorch\'s loss and gradients', async () => {
  const bytes = new Uint8Array(readFileSync(`${FIX}model.onnx`));
  const { tensors } = parseSafetensors(readFileSync(`${FIX}tensors.safetensors`));
  const meta = JSON.parse(readFileSync(`${FIX}meta.json`, 'utf8'));
  const x = tensors.get('input.x')!, y = tensors.get('label.y')!;

  const model = await loadModel(`${FIX}model.onnx`, { threads: 1 });
  assert.deepEqual(model.ir.graph.nodes.filter((n) => n.domain !== '').map((n) => n.opType), [], 'every call inlined');
  assert.ok(!model.ir.opsets.some((o) => o.domain === '__main__'), 'the functions\' domain is no longer imported');
  assert.deepEqual(model.parameterNames('all').sort(), Object.keys(meta.param_names).sort(), '\'all\' is PyTorch\'s parameters');

  const want = (await ortRun(bytes, { x })).logits!;
  const got = (await model.run({ x })).logits!.data as Float32Array;
  assert.ok(relErr(got, want) <= 1e-6, `logits: relative error ${relErr(got, want)} against onnxruntime on the original`);
  assert.ok(relErr(got, tensors.get('output.logits')!.data as Float32Array) <= 1e-5, 'logits match PyTorch');

  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x, y });
  await step.release();
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${r.loss} vs PyTorch ${refLoss}`);
  let checked = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith('grad.')) continue;
    const g = r.grads.get(k.slice(5));
    assert.ok(g, `no gradient for ${k.slice(5)}`);
    assert.ok(relErr(g, t.data as Float32Array) <= 1e-4, `${k}: relative error ${relErr(g, t.data as Float32Array).toExponential(2)}`);
    checked++;
  }
  assert.equal(checked, 20);
  // the BatchNorms and LayerNorms inside the bodies are found as normalization layers
  assert.equal(findNormLayers(model.ir.graph).length, 4);

  // saved, it is a plain model onnxruntime runs to the same outputs
  const dir = mkdtempSync(join(tmpdir(), 'refit-functions-'));
  try {
    await model.save(join(dir, 'flat.onnx'));
    const flat = readFileSync(join(dir, 'flat.onnx'));
    assert.equal(onnx.ModelProto.decode(flat).functions.length, 0);
    assert.ok(relErr((await ortRun(new Uint8Array(flat), { x })).logits!, want) <= 1e-6);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await model.release();
});

// ---------------------------------------------------------------- hand-written functions
type Attr = onnxProto.onnx.IAttributeProto;
const A = onnx.AttributeProto.AttributeType;
const ref = (name: string, refAttrName: string, type: number): Attr => ({ name, refAttrName, type });
const tensorInfo = (name: string, dims: number[]) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });

/**
 * `local:Scale(X) -> (Y, Aux)`: Y = LeakyRelu(X · alpha, slope), Aux = -Y. alpha must be given;
 * slope defaults to 0.5 through attribute_proto, written by hand since onnx-proto cannot.
 */
function scaleFunction(opset = 17): Uint8Array {
  const fn = onnx.FunctionProto.encode({
    name: 'Scale', domain: 'local', input: ['X'], output: ['Y', 'Aux'], attribute: ['alpha'],
    opsetImport: [{ domain: '', version: opset }],
    node: [
      { opType: 'Constant', output: ['c'], attribute: [ref('value_float', 'alpha', A.FLOAT)] },
      { opType: 'Mul', input: ['X', 'c'], output: ['t'] },
      { opType: 'LeakyRelu', input: ['t'], output: ['Y'], attribute: [ref('alpha', 'slope', A.FLOAT)] },
      { opType: 'Neg', input: ['Y'], output: ['Aux'] },
    ],
  }).finish();
  const w = protobuf.Writer.create();
  w.uint32((11 << 3) | 2).bytes(onnx.AttributeProto.encode({ name: 'slope', type: A.FLOAT, f: 0.5 }).finish());
  return concat(fn, w.finish()); // a message's fields may come in any order
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A model whose graph calls Scale three times: once with an unused output, once with slope given, once in an If branch. */
function modelBytes(extra: { fnBytes?: Uint8Array[]; graphNodes?: onnxProto.onnx.INodeProto[] } = {}): Uint8Array {
  const thenBranch = {
    name: 'then', output: [tensorInfo('z_then', [2, 3])],
    node: [{ opType: 'Scale', domain: 'local', input: ['y2'], output: ['z_then', ''], attribute: [{ name: 'alpha', type: A.FLOAT, f: -1 }] }],
  };
  const elseBranch = { name: 'else', output: [tensorInfo('z_else', [2, 3])], node: [{ opType: 'Identity', input: ['y2'], output: ['z_else'] }] };
  const graph = {
    name: 'g',
    input: [tensorInfo('x', [2, 3])],
    output: [tensorInfo('y2', [2, 3]), tensorInfo('aux2', [2, 3]), tensorInfo('z', [2, 3])],
    initializer: [{ name: 'cond', dataType: 9, dims: [], int32Data: [1] }],
    node: extra.graphNodes ?? [
      { name: 'call1', opType: 'Scale', domain: 'local', input: ['x'], output: ['y1', ''], attribute: [{ name: 'alpha', type: A.FLOAT, f: 2 }] },
      { name: 'call2', opType: 'Scale', domain: 'local', input: ['y1'], output: ['y2', 'aux2'], attribute: [{ name: 'alpha', type: A.FLOAT, f: 3 }, { name: 'slope', type: A.FLOAT, f: 0.1 }] },
      { name: 'branch', opType: 'If', input: ['cond'], output: ['z'], attribute: [{ name: 'then_branch', type: A.GRAPH, g: thenBranch }, { name: 'else_branch', type: A.GRAPH, g: elseBranch }] },
    ],
  };
  const model = onnx.ModelProto.encode({
    irVersion: 9, opsetImport: [{ domain: '', version: 17 }, { domain: 'local', version: 1 }], graph,
  }).finish();
  const w = protobuf.Writer.create();
  for (const f of extra.fnBytes ?? [scaleFunction()]) w.uint32((25 << 3) | 2).bytes(f);
  return concat(model, w.finish());
}

test('hand-written functions: attribute references, a default from attribute_proto, an unused output and a call in an If branch compute what onnxruntime computes', async () => {
  const bytes = modelBytes();
  const x = f32([2, 3], [-1.5, -0.2, 0, 0.3, 1, 2.5]);
  const want = await ortRun(bytes, { x });
  const m = decodeModel(bytes);
  assert.ok(!m.graph.nodes.some((n) => n.opType === 'Scale'));
  assert.deepEqual(m.opsets.map((o) => o.domain), ['']);
  const model = await loadModel(bytes, { threads: 1 });
  const got = await model.run({ x });
  for (const k of ['y2', 'aux2', 'z']) assert.deepEqual([...(got[k]!.data as Float32Array)], [...want[k]!], k);
  // the default slope (0.5) was used by call1 and the given one (0.1) by call2: x = -1.5 → -1.5·2·0.5 = -1.5 → -1.5·3·0.1
  assert.ok(Math.abs((got.y2!.data as Float32Array)[0]! - -0.45) < 1e-6);
  await model.release();
});

test('functions refit cannot inline faithfully are refused by name: recursion, overloads, another opset, a call with more outputs than declared', () => {
  const selfCall = onnx.FunctionProto.encode({
    name: 'Loop1', domain: 'local', input: ['X'], output: ['Y'], opsetImport: [{ domain: '', version: 17 }, { domain: 'local', version: 1 }],
    node: [{ opType: 'Loop1', domain: 'local', input: ['X'], output: ['Y'] }],
  }).finish();
  const nodes = [{ opType: 'Loop1', domain: 'local', input: ['x'], output: ['y2'] }, { opType: 'Neg', input: ['y2'], output: ['aux2'] }, { opType: 'Neg', input: ['y2'], output: ['z'] }];
  assert.throws(() => decodeModel(modelBytes({ fnBytes: [selfCall], graphNodes: nodes })), /function 'local:Loop1' calls itself/);
  const twice = [scaleFunction(), scaleFunction()];
  assert.throws(() => decodeModel(modelBytes({ fnBytes: twice })), /'local:Scale' is overloaded/);
  assert.throws(() => decodeModel(modelBytes({ fnBytes: [scaleFunction(13)] })), /'local:Scale' is written for opset 13 and the model for opset 17/);
  const tooMany = [{ name: 'bad', opType: 'Scale', domain: 'local', input: ['x'], output: ['y2', 'aux2', 'z'], attribute: [{ name: 'alpha', type: A.FLOAT, f: 2 }] }];
  assert.throws(() => decodeModel(modelBytes({ graphNodes: tooMany })), /node 'bad' calls model-local function 'local:Scale' with 1 inputs and 3 outputs; it declares 1 and 2/);
});
