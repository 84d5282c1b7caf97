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
import { tensorToProto } from '../../src/onnx/proto.ts';
import { f32, tensor, type Tensor } from '../../src/onnx/tensor.ts';
import type { Attr } from '../../src/onnx/ir.ts';
import * as losses from '../../src/train/losses.ts';
import { diagnoseTraining } from '../../src/autodiff/diagnose.ts';

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
