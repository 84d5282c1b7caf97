// Importing this module registers every gradient rule.
import './arith.ts';
import './matmul.ts';
import './activations.ts';
import './elementwise.ts';
import './reduce.ts';
import './shape.ts';
import './indexing.ts';
import './conv.ts';
import './pool.ts';
import './norm.ts';
import './conv-transpose.ts';
import './resize.ts';
import './rearrange.ts';
import './activations-extra.ts';
import './einsum.ts';
import './nd-indexing.ts';
import './quant.ts';
