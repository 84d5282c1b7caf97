// What torch.onnx's names say about where a tensor or node came from: a module path in a node's
// name, and tensor names the exporter made up rather than took from a module.

/**
 * A name the exporter made up rather than took from a module: torch.onnx's folded tensors
 * (`onnx::MatMul_123`), and a Constant node's output made an initializer on load
 * (`/conv1/Constant_2_output_0`: torch's quantized models export their weights that way).
 */
export const GENERATED_NAME = /^onnx::|^\/.*_output_\d+$/;

/**
 * The module path torch.onnx writes into a node's name: `/layers.0/self_attn/q_proj/MatMul` →
 * `layers.0.self_attn.q_proj`. A called container repeats in its child's scope (`/mlp/mlp.0/…`):
 * written once (`mlp.0`). Undefined for names of another form.
 */
export function modulePathOfNode(node: string): string | undefined {
  if (!node.startsWith('/')) return undefined;
  const parts = node.slice(1).split('/').slice(0, -1);
  if (parts.length === 0 || parts.some((p) => p === '')) return undefined;
  const out: string[] = [];
  for (const p of parts) {
    if (out.length && p.startsWith(`${out[out.length - 1]}.`)) out[out.length - 1] = p;
    else out.push(p);
  }
  return out.join('.');
}
