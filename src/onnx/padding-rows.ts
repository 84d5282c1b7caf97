// PyTorch's `nn.Embedding(padding_idx=p)`: row p starts at zeros and never receives a gradient
// from the lookup, so it stays zeros through training. An export keeps only a Gather, and the
// padding index is lost; the table still shows it, as its one row of exact zeros. refit gives that
// row no gradient from the lookups either (the Gather rule, src/autodiff/rules/indexing.ts), so a
// step matches PyTorch's: otherwise every padded position would train the padding vector, which
// PyTorch keeps at zero. A tied output projection (a language model's lm_head reading the same
// table) still trains the row, as it does in PyTorch.
import type { Graph } from './ir.ts';
import { attrInt, initializerBehind, producers } from './ir.ts';

/**
 * Per Gather data input that reads an embedding table (a 2-D float initializer, directly or through
 * an Identity alias, looked up along axis 0) with exactly one all-zero row among at least 3: that row.
 */
export function embeddingPaddingRows(g: Graph): Map<string, number> {
  const prod = producers(g);
  const rows = new Map<string, number>();
  const zeroRow = new Map<string, number | undefined>(); // per table, however many Gathers read it
  for (const n of g.nodes) {
    if (n.opType !== 'Gather' || (n.domain !== '' && n.domain !== 'ai.onnx') || attrInt(n, 'axis', 0) !== 0) continue;
    const data = n.inputs[0]!, name = initializerBehind(g, prod, data), w = name ? g.initializers.get(name) : undefined;
    if (!name || !w || w.dims.length !== 2 || w.dtype !== 'float32' || w.dims[0]! < 3) continue;
    if (!zeroRow.has(name)) zeroRow.set(name, onlyZeroRow(w.data as Float32Array, w.dims[0]!, w.dims[1]!));
    const r = zeroRow.get(name);
    if (r !== undefined) rows.set(data, r);
  }
  return rows;
}

function onlyZeroRow(v: Float32Array, rows: number, cols: number): number | undefined {
  if (cols === 0) return undefined;
  let found: number | undefined;
  for (let r = 0; r < rows; r++) {
    let zero = true;
    for (let c = r * cols, end = c + cols; c < end; c++) if (v[c] !== 0) { zero = false; break; }
    if (!zero) continue;
    if (found !== undefined) return undefined; // two zero rows: not one padding index
    found = r;
  }
  return found;
}
