// The GradContext implementation over a forward graph with probed shapes.
import type { Graph } from '../onnx/ir.ts';
import { attrTensor, producers } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import type { ShapeMap } from '../onnx/shapes.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';
import type { GradContext } from './rule.ts';

export function makeContext(graph: Graph, shapes: ShapeMap, em: Emitter, variables: ReadonlySet<string>, paddingRows: ReadonlyMap<string, number> = new Map()): GradContext {
  const prod = producers(graph);
  // Snapshot of the forward constants; trainables are initializers now but graph inputs later.
  const initializers = new Map([...graph.initializers].filter(([k]) => !variables.has(k)));
  const ctx: GradContext = {
    em,
    opset: em.opset,
    shape(name) {
      const s = shapes.get(name);
      if (!s) throw new Error(`internal: no probed shape for tensor '${name}'`);
      return s.dims;
    },
    dtype(name) {
      const s = shapes.get(name);
      if (!s) throw new Error(`internal: no probed dtype for tensor '${name}'`);
      return s.dtype;
    },
    constant(name): Tensor | undefined {
      const init = initializers.get(name);
      if (init) return init;
      const p = prod.get(name);
      if (p && p.opType === 'Constant') return attrTensor(p, 'value');
      return undefined;
    },
    paddingRow: (table) => paddingRows.get(table),
    unbroadcast(grad, gradShape, targetShape) {
      if (sameShape(gradShape, targetShape)) return grad;
      // A sum over an empty axis (a size-1 operand broadcast to 0 copies) is 0. Emitted as a
      // constant: onnxruntime's ReduceSum over an empty input leaves a reused output buffer as it
      // was (a length regulator's zero duration took the gradient of one copy).
      if (gradShape.includes(0)) return em.constant(f32(targetShape, new Float32Array(targetShape.reduce((a, b) => a * b, 1))), 'zero_grad');
      const lead = gradShape.length - targetShape.length;
      const axes: number[] = [];
      for (let i = 0; i < gradShape.length; i++) {
        const t = i < lead ? 1 : targetShape[i - lead]!;
        if (i < lead || (t === 1 && gradShape[i] !== 1)) axes.push(i);
      }
      let g = em.reduce('ReduceSum', grad, axes, true);
      return em.reshape(g, targetShape);
    },
  };
  return ctx;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

