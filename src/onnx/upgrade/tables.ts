// Which default-domain ops changed between opset 7 and 13, and how (ONNX docs/Changelog.md,
// checked against onnx 1.12's schema history). Ops listed in UNCHANGED have no version in
// (7, 13] or only versions that widen types, allow negative axes or indices, or add attributes
// and optional inputs whose defaults keep the old behaviour: they carry over untouched.
// Ops with a rewrite are in ./rewrites.ts; any other op is refused by name.

export const TARGET_OPSET = 13;
/**
 * Opsets 1–6 (PyTorch's 2017–2018 exports, the first model zoo) are converted where onnxruntime
 * still runs them, since every conversion is verified against onnxruntime's run of the original:
 * Conv, pooling, Relu-6, Softmax, Reshape-1 (its shape attribute becomes an input, ./rewrites.ts)
 * and the like; `consumed_inputs` (an in-place hint) is dropped. onnxruntime has no kernels for the
 * legacy-broadcast forms (Add-6, Mul-6, Gemm-6, PRelu-6, BatchNormalization-6 …), so a file that
 * holds them is refused by the verification, naming the op; the ops below are refused by name.
 */
export const MIN_SOURCE_OPSET = 1;

/** Ops whose form before opset 7 is not converted, with the version their current form starts at. */
export const LEGACY_REFUSED: Record<string, number> = { Tile: 6, GRU: 7, LSTM: 7, RNN: 7, Upsample: 7 };

export const UNCHANGED = new Set([
  // elementwise math and logic (7: numpy broadcasting; 9/11/12/13: types only)
  'Abs', 'Acos', 'Acosh', 'Add', 'And', 'Asin', 'Asinh', 'Atan', 'Atanh', 'BitShift', 'Ceil', 'Celu', 'Cos', 'Cosh',
  'Div', 'Elu', 'Equal', 'Erf', 'Exp', 'Floor', 'Greater', 'GreaterOrEqual', 'HardSigmoid', 'IsInf', 'IsNaN',
  'LeakyRelu', 'Less', 'LessOrEqual', 'Log', 'Max', 'Mean', 'Min', 'Mod', 'Mul', 'Neg', 'Not', 'Or', 'PRelu', 'Pow',
  'Reciprocal', 'Relu', 'Round', 'Selu', 'Shrink', 'Sigmoid', 'Sign', 'Sin', 'Sinh', 'Softplus', 'Softsign', 'Sqrt',
  'Sub', 'Sum', 'Tan', 'Tanh', 'ThresholdedRelu', 'Where', 'Xor', 'Cast', 'Identity',
  // linear algebra, convolution, pooling, normalization (10/11/12: ceil_mode, dilations, optional C, int8 types)
  'MatMul', 'Gemm', 'Einsum', 'Det', 'Conv', 'ConvTranspose', 'AveragePool', 'MaxPool', 'LpPool', 'MaxUnpool', 'MaxRoiPool',
  'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool', 'InstanceNormalization', 'LRN', 'LpNormalization',
  'MeanVarianceNormalization', 'RoiAlign',
  // reductions other than ReduceSum keep `axes` as an attribute until 18
  'ArgMax', 'ArgMin', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceMax', 'ReduceMean', 'ReduceMin',
  'ReduceProd', 'ReduceSumSquare', 'CumSum',
  // shape and indexing (11: negative axes/indices; 11 DepthToSpace mode defaults to the old DCR order)
  'Concat', 'Constant', 'ConstantOfShape', 'Compress', 'DepthToSpace', 'SpaceToDepth', 'Expand', 'EyeLike', 'Flatten',
  'Gather', 'GatherElements', 'GatherND', 'NonZero', 'OneHot', 'Range', 'Reshape', 'ReverseSequence', 'ScatterElements',
  'ScatterND', 'Shape', 'Size', 'Tile', 'Transpose', 'Unique', 'Resize',
  // recurrent layers (unchanged 7 → 14), quantization (13 adds per-axis, default per-tensor as before)
  'GRU', 'LSTM', 'RNN', 'QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear', 'QLinearConv', 'QLinearMatMul',
  'ConvInteger', 'MatMulInteger',
  // sequences, detection, text, losses, random
  'ConcatFromSequence', 'SequenceAt', 'SequenceConstruct', 'SequenceEmpty', 'SequenceErase', 'SequenceInsert',
  'SequenceLength', 'SplitToSequence', 'NonMaxSuppression', 'StringNormalizer', 'TfIdfVectorizer',
  'NegativeLogLikelihoodLoss', 'SoftmaxCrossEntropyLoss', 'Multinomial', 'RandomNormal', 'RandomNormalLike',
  'RandomUniform', 'RandomUniformLike',
]);

/** Ops whose bodies (subgraph attributes) run under the model's opset: refit does not rewrite inside them. */
export const CONTROL_FLOW = new Set(['If', 'Loop', 'Scan']);
