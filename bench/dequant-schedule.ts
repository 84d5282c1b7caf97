// Can a training step keep low-bit weights low-bit in onnxruntime? Each of 8 layers reads a
// [4096, 4096] weight (64 MB as float32) made from 8-bit codes in the graph; the question is how
// much the run adds to the process's peak, i.e. whether onnxruntime dequantizes each weight next to
// its product (about one float weight alive at a time) or all of them up front (all alive at once).
//
//   node --import tsx bench/dequant-schedule.ts fed|dequantize|baked
//
// fed: the codes are graph inputs (nothing can be constant-folded), Cast and Mul by the scale,
// forward products only. dequantize: int8 initializers through DequantizeLinear (which onnxruntime
// does not constant-fold), each weight read by the forward MatMul and again by a backward-style
// Gemm (transB) after the last layer. baked: the fed form's codes as initializers (onnxruntime
// folds the float weights at session creation). One process per form: the readings are VmHWM.
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { f32, tensor } from '../src/onnx/tensor.ts';

const hwm = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
const form = process.argv[2] ?? 'fed';
if (!['fed', 'dequantize', 'baked'].includes(form)) throw new Error(`form must be fed, dequantize or baked, not '${form}'`);
const L = 8, D = 4096;
const b = new ModelBuilder({ opset: 17 });
b.input('x', 'float32', [64, D]);
b.initializer('s', f32([], [0.01]));
const feeds: Record<string, ReturnType<typeof toOrt>> = { x: toOrt(f32([64, D], new Float32Array(64 * D).fill(0.1))) };
let h = 'x';
for (let i = 0; i < L; i++) {
  if (form === 'dequantize') {
    b.initializer(`c${i}`, tensor('int8', [D, D], new Int8Array(D * D).map((_, j) => ((j * 7 + i) % 15) - 7)));
    b.initializer(`s${i}`, f32([D], new Array(D).fill(0.01)));
    b.initializer(`z${i}`, tensor('int8', [D], new Array(D).fill(0)));
    b.node('DequantizeLinear', [`c${i}`, `s${i}`, `z${i}`], [`w${i}`], { axis: 1 });
  } else {
    const codes = tensor('uint8', [D, D], new Uint8Array(D * D).map((_, j) => (j * 7 + i) & 15));
    if (form === 'fed') { b.input(`c${i}`, 'uint8', [D, D]); feeds[`c${i}`] = toOrt(codes); } else b.initializer(`c${i}`, codes);
    b.node('Cast', [`c${i}`], [`cf${i}`], { to: 1 });
    b.node('Mul', [`cf${i}`, 's'], [`w${i}`]);
  }
  b.node('MatMul', [h, `w${i}`], [`m${i}`]);
  b.node('Tanh', [`m${i}`], [`h${i}`]);
  h = `h${i}`;
}
if (form === 'dequantize') for (let i = L - 1; i >= 0; i--) { b.node('Gemm', [h, `w${i}`], [`g${i}`], { transB: 1 }); h = `g${i}`; }
b.output(h, 'float32', [64, D]);
const before = hwm();
const session = await createSession(encodeModel(b.build()), { threads: 2 });
const created = hwm();
await session.run(feeds);
await session.run(feeds);
console.log(`${form}: VmHWM ${before.toFixed(0)} MB before the session, ${created.toFixed(0)} after creating it, ${hwm().toFixed(0)} after two runs (+${(hwm() - created).toFixed(0)} MB; one float weight is 64 MB, ${L} layers)`);
