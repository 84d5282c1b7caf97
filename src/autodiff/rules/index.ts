// Importing this module registers every gradient rule.
import './arith.ts';
import './matmul.ts';
import './activations.ts';
import './reduce.ts';
import './shape.ts';
