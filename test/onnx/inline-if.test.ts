// Inlining an If whose condition is a constant (src/onnx/inline-if.ts), and control flow on the
// gradient path (src/onnx/subgraphs.ts): a weight read only inside an If branch is refused by
// name instead of getting a silent zero gradient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { inlineConstantIfs, constantCondition } from '../../src/onnx/inline-if.ts';
import { outerReads } from '../../src/onnx/subgraphs.ts';
import { f32, tensor, type Tensor } from '../../src/onnx/tensor.ts';
import type { Attr } from '../../src/onnx/ir.ts';
import * as losses from '../../src/train/losses.ts';
import { diagnoseTraining } from '../../src/autodiff/diagnose.ts';
import { withFixedInputs } from '../../src/onnx/fixed-inputs.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { inspectModel, formatInspect } from '../../src/cli/inspect.ts';
import { encodeModel, tensorToProto } from '../../src/onnx/proto.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const { onnx } = onnxProto;
const F = onnx.TensorProto.DataType.FLOAT;
const vi = (name: string) => ({ name, type: { tensorType: { elemType: F, shape: { dim: [{ dimValue: 2 }] } } } });
const node = (opType: string, input: string[], output: string[], name: string) => ({ opType, input, output, name });
function branch(name: string, nodes: ReturnType<typeof node>[], outputs: string[], inits: [string, Tensor][] = []): Attr {
  return { kind: 'opaque', value: { name, type: onnx.AttributeProto.AttributeType.GRAPH, g: { name, node: nodes, output: outputs.map(vi), initializer: inits.map(([n, t]) => tensorToProto(n, t)) } } };
}

/**
 * y = If(c) then (x * w) + k_then else (x + w) * t, where the else branch has its own
 * initializer 't', a name the outer graph also uses, and a node named as an outer one (the second
 * output is the branch's initializer k_then, or the else branch's x + w).
 */
function ifModel(cond: Tensor | 'input') {
  const b = new ModelBuilder({ opset: 14 }).input('x', 'float32', [2]).initializer('w', f32([2], [0.5, -2]));
  if (cond === 'input') b.input('c', 'bool', [1]); else b.initializer('c', cond);
  b.initializer('t', f32([2], [10, 20])).node('Add', ['x', 't'], ['sum'], {}, 'outer_add');
  const m = b.build();
  m.graph.nodes.push({
    name: 'the_if', opType: 'If', domain: '', inputs: ['c'], outputs: ['y', 'z'], attrs: {
      then_branch: branch('then', [node('Mul', ['x', 'w'], ['prod'], 'm'), node('Add', ['prod', 'k_then'], ['out'], 'a')], ['out', 'k_then'], [['k_then', f32([2], [1, 1])]]),
      else_branch: branch('else', [node('Add', ['x', 'w'], ['sum_e'], 'outer_add'), node('Mul', ['sum_e', 't'], ['out'], 'm')], ['out', 'sum_e'], [['t', f32([2], [3, 4])]]),
    },
  });
  m.graph.nodes.push({ name: 'after', opType: 'Add', domain: '', inputs: ['y', 'sum'], outputs: ['u'], attrs: {} });
  m.graph.outputs.push({ name: 'u', dtype: 'float32', shape: [2] }, { name: 'z', dtype: 'float32', shape: [2] });
  return m;
}

const x = f32([2], [1, 2]);

test('an If on a constant condition is replaced by its branch: same outputs, clashing names renamed, branch initializers kept', async () => {
  for (const value of [true, false]) {
    const cond = tensor('bool', [1], [value ? 1 : 0]);
    const original = new RefitModel(ifModel(cond));
    const want = await original.run({ x });
    const ir = ifModel(cond);
    assert.equal(constantCondition(ir.graph, 'c'), value);
    assert.equal(inlineConstantIfs(ir.graph), 1);
    assert.ok(!ir.graph.nodes.some((n) => n.opType === 'If'));
    const got = await new RefitModel(ir).run({ x });
    assert.deepEqual(Array.from(got.u!.data as Float32Array), Array.from(want.u!.data as Float32Array), `u, branch ${value}`);
    assert.deepEqual(Array.from(got.z!.data as Float32Array), Array.from(want.z!.data as Float32Array), `z, branch ${value}`);
    // x=[1,2]: then (x·w + 1) + (x + t) = [1.5, -3] + [11, 22]; else ((x + w)·[3,4]) + [11, 22]
    assert.deepEqual(Array.from(got.u!.data as Float32Array), value ? [12.5, 19] : [15.5, 22]);
    assert.deepEqual(Array.from(got.z!.data as Float32Array), value ? [1, 1] : [1.5, 0]);
    if (!value) {
      assert.deepEqual(Array.from(ir.graph.initializers.get('t')!.data as Float32Array), [10, 20], 'the outer t is untouched');
      assert.ok([...ir.graph.initializers.keys()].some((k) => k.startsWith('t_inlined')), 'the branch t is renamed');
    }
  }
});

test('a branch output listed twice is copied by an Identity', async () => {
  const ir = ifModel(tensor('bool', [1], [0]));
  const n = ir.graph.nodes.find((k) => k.opType === 'If')!;
  ((n.attrs.else_branch!.value as { g: { output: { name: string }[] } }).g.output[1]!).name = 'out';
  inlineConstantIfs(ir.graph);
  assert.ok(ir.graph.nodes.some((k) => k.opType === 'Identity' && k.inputs[0] === 'y' && k.outputs[0] === 'z'));
  const got = await new RefitModel(ir).run({ x });
  assert.deepEqual(Array.from(got.z!.data as Float32Array), [4.5, 0]);
});

test('an If on a fed condition stays; its outer-scope reads are named', () => {
  const ir = ifModel('input');
  assert.equal(inlineConstantIfs(ir.graph), 0);
  const n = ir.graph.nodes.find((k) => k.opType === 'If')!;
  assert.deepEqual(outerReads(n).sort(), ['w', 'x'], 'the else branch defines its own t');
});

test('a weight read only inside an If branch is refused on the gradient path, not given a zero gradient', async () => {
  const m = new RefitModel(ifModel('input'));
  const step = m.compileTrainStep({ trainable: ['w'], loss: losses.mse({ output: 'u', target: 'target' }), outputs: ['u'] });
  await assert.rejects(
    step.run({ x, c: tensor('bool', [1], [1]), target: f32([2], [0, 0]) }),
    (e: Error) => /no gradient rule for op If/.test(e.message) && /the_if/.test(e.message) && /'w'/.test(e.message) && /withoutKvCache/.test(e.message),
  );
  await step.release();
  const d = diagnoseTraining(m.ir);
  assert.deepEqual(d.unsupportedOps.map((b) => [b.opType, b.nodes, b.params]), [['If', ['the_if'], ['w']]], 'diagnoseTraining names it too');
});

// Silero VAD v5's file as torch.jit.script exports it: the whole 16 kHz model inside an If on the
// sample rate, its weights Constant nodes, and Ifs nested in the branch on shapes: one on a
// static dim of the declared state ([2, ?, 4]), and inside that one a rank check of an
// intermediate that only a shape probe decides. Branch outputs carry no type, and the 8 kHz
// branch reads a weight of the outer graph.
function nestedIfModel() {
  const cst = (out: string, t: Tensor) => ({ opType: 'Constant', input: [], output: [out], name: `${out}_const`, attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: tensorToProto('', t) }] });
  const graph = (name: string, nodes: object[], outputs: string[]): Attr => ({ kind: 'opaque', value: { name, type: onnx.AttributeProto.AttributeType.GRAPH, g: { name, node: nodes, output: outputs.map((o) => ({ name: o })) } } });
  const ifNode = (name: string, cond: string, outs: string[], then: Attr, els: Attr) => ({ opType: 'If', input: [cond], output: outs, name, attribute: [{ ...(then.value as object), name: 'then_branch' }, { ...(els.value as object), name: 'else_branch' }] });
  const rank2 = ifNode('rank_if', 'is_2d', ['h4'],
    graph('rank_then', [node('Relu', ['h3'], ['h4_then'], 'relu')], ['h4_then']),
    graph('rank_else', [node('Identity', ['h3'], ['h4_else'], 'keep')], ['h4_else']));
  const stateIf = ifNode('state_if', 'has_layers', ['h2'],
    graph('state_then', [
      cst('w2', f32([4, 4], Array.from({ length: 16 }, (_, i) => ((i * 7) % 5) / 4 - 0.5))),
      node('MatMul', ['h', 'w2'], ['h3'], 'mm2'),
      node('Shape', ['h3'], ['s3'], 'shape3'), node('Size', ['s3'], ['r3'], 'size3'),
      cst('two', tensor('int64', [], [2])), node('Equal', ['r3', 'two'], ['is_2d'], 'eq3'),
      rank2,
    ], ['h4']),
    graph('state_else', [node('Identity', ['h'], ['h_else'], 'skip')], ['h_else']));
  const b = new ModelBuilder({ opset: 14 }).input('x', 'float32', ['n', 3]).input('state', 'float32', [2, 'n', 4]).input('sr', 'int64', []);
  b.initializer('w8k', f32([3, 4], Array.from({ length: 12 }, (_, i) => i / 10)));
  const m = b.build();
  const sixteen = { name: 'rate', opType: 'Constant', domain: '', inputs: [], outputs: ['k16000'], attrs: { value: { kind: 'tensor' as const, value: tensor('int64', [], [16000]) } } };
  m.graph.nodes.push(sixteen, { name: 'is16k', opType: 'Equal', domain: '', inputs: ['sr', 'k16000'], outputs: ['c'], attrs: {} });
  m.graph.nodes.push({
    name: 'rate_if', opType: 'If', domain: '', inputs: ['c'], outputs: ['y', 's'], attrs: {
      then_branch: graph('then', [
        cst('w1', f32([3, 4], Array.from({ length: 12 }, (_, i) => ((i * 5) % 7) / 6 - 0.4))),
        node('MatMul', ['x', 'w1'], ['h'], 'mm1'),
        node('Shape', ['state'], ['sh'], 'shape_state'), cst('zero', tensor('int64', [], [0])),
        { ...node('Gather', ['sh', 'zero'], ['d0'], 'dim0') }, { ...node('Cast', ['d0'], ['has_layers'], 'to_bool'), attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: onnx.TensorProto.DataType.BOOL }] },
        stateIf,
        cst('ws', f32([4], [0.5, -1, 2, 0.25])), node('Mul', ['state', 'ws'], ['s_then'], 'scale_state'),
        node('Identity', ['h2'], ['y_then'], 'out_y'),
      ], ['y_then', 's_then']),
      else_branch: graph('else', [node('MatMul', ['x', 'w8k'], ['y_else'], 'mm8k'), node('Identity', ['state'], ['s_else'], 'keep_state')], ['y_else', 's_else']),
    },
  });
  m.graph.nodes.push({ name: 'y_out', opType: 'Identity', domain: '', inputs: ['y'], outputs: ['output'], attrs: {} }, { name: 's_out', opType: 'Identity', domain: '', inputs: ['s'], outputs: ['stateN'], attrs: {} });
  m.graph.outputs.push({ name: 'output', dtype: 'float32', shape: ['n', 4] }, { name: 'stateN', dtype: 'float32', shape: [2, 'n', 4] });
  return m;
}

test('conditions a declared input shape decides: its rank, a static dim, not a symbolic one', () => {
  const b = new ModelBuilder({ opset: 14 }).input('s', 'float32', [2, 'n', 4]).initializer('two', tensor('int64', [], [2])).initializer('one', tensor('int64', [], [1]))
    .node('Shape', ['s'], ['sh']).node('Size', ['sh'], ['rank']).node('Equal', ['rank', 'two'], ['is2d'])
    .node('Gather', ['sh', 'one'], ['d1']).node('Equal', ['d1', 'two'], ['n2'])
    .node('Shape', ['s'], ['sh0'], { end: 1 }).node('Squeeze', ['sh0'], ['d0']).node('Equal', ['d0', 'two'], ['d0is2']);
  const g = b.build().graph;
  assert.equal(constantCondition(g, 'is2d'), false, 'rank 3');
  assert.equal(constantCondition(g, 'n2'), undefined, 'dim 1 is symbolic');
  assert.equal(constantCondition(g, 'd0is2'), true, 'dim 0 is 2');
});

test('refit inspect names an If on an input whose branches hold the weights, and what they hold', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-if-'));
  try {
    const path = join(dir, 'nested.onnx');
    writeFileSync(path, encodeModel(nestedIfModel()));
    const r = await inspectModel(path);
    assert.deepEqual(r.controlFlow, [{ node: 'rate_if', inputs: ['sr'], tensors: 3, values: 32 }], 'w1 [3, 4], w2 [4, 4] (nested one If deeper), ws [4]; the 8 kHz branch reads w8k from the top graph');
    assert.match(formatInspect(r), /control: {4}If 'rate_if' on input 'sr' holds 32 weight values in 3 tensors in its branches[^\n]*withFixedInputs\(model, \{ sr: … \}\)/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('Ifs nested as Silero VAD v5 nests them: the rate fixed inlines the branch and the If a declared dim decides; the rank check goes while a step compiles; the nested weights train', async () => {
  const xs = f32([3, 3], [0.3, -1.2, 0.8, 1.1, 0.2, -0.7, -0.4, 0.9, 0.5]);
  const state = f32([2, 3, 4], Array.from({ length: 24 }, (_, i) => Math.sin(i)));
  const plain = new RefitModel(nestedIfModel());
  const want = await plain.run({ x: xs, state, sr: tensor('int64', [], [16000]) });
  const vad = withFixedInputs(plain, { sr: tensor('int64', [], [16000]) });
  const ifs = vad.ir.graph.nodes.filter((n) => n.opType === 'If').map((n) => n.name);
  assert.deepEqual(ifs, ['rank_if'], 'the rate and the declared dim decide two of the three Ifs');
  assert.ok(!vad.ir.graph.initializers.has('w8k'), 'a weight only the branch not taken read is dropped');
  assert.deepEqual(vad.parameterNames().sort(), ['w1', 'w2', 'ws'], 'Constant weights of both inlined branches are parameters');
  const got = await vad.run({ x: xs, state });
  for (const o of ['output', 'stateN']) assert.deepEqual(Array.from(got[o]!.data as Float32Array), Array.from(want[o]!.data as Float32Array), o);
  const reports = await gradCheck(vad.ir, { x: xs, state }, { eps: 1e-2 });
  assert.equal(reports.length, 3);
  for (const r of reports) assert.ok(r.relError < 1e-3 && r.analyticNorm > 0, `${r.param}: ${r.relError}`);
  await Promise.all([plain.release(), vad.release()]);
});
