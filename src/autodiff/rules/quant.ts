// Quantization ops on the gradient path. The integer hop of a quantized layer is bridged by the
// rewrite in ../lower/quant.ts (straight-through estimator, same forward numbers); what reaches these
// rules afterwards are only the float scale and zero-point tensors, and they get no gradient:
// scales and zero points are treated as constants, the usual straight-through convention (PyTorch's
// fake_quantize with fixed qparams). A trainable scale (LSQ) is therefore not supported.
import { registerRules } from '../rule.ts';

const none = (needs: boolean[]) => needs.map(() => null);

registerRules({
  // Output 1 (y_scale, float) depends on x's min/max; output 0 and 2 are integers.
  DynamicQuantizeLinear: (_ctx, _node, _dOut, needs) => none(needs),
  // Input 0 is an integer tensor; inputs 1 (scale) and 2 (zero point) are constants by convention.
  DequantizeLinear: (_ctx, _node, _dOut, needs) => none(needs),
  // Its output is an integer tensor, so no gradient ever arrives; registered so that a computed
  // scale upstream does not read as a missing rule.
  QuantizeLinear: (_ctx, _node, _dOut, needs) => none(needs),
});
