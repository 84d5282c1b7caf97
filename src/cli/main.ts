// The `refit` command. Each command's module is imported when it runs, so `--help` stays fast.
import { Command } from 'commander';

const program = new Command();
program
  .name('refit')
  .description('Keep deployed ONNX models fitted: training, PEFT and test-time adaptation on onnxruntime')
  .option('--debug', 'print the stack trace of an error')
  .addHelpText('after', `
Examples:
  refit inspect model.onnx
  refit train model.onnx --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --adapter lora --epochs 3 --out my-lora/
  refit adapt model.onnx --method tent --stream stream.npy --out preds.csv
  refit eval model.onnx --data images/
  refit bench model.onnx --batch-size 64
  refit demo --quick`);

const examples = (...lines: string[]) => `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`;
const dataHelp = `
Data (--data, --stream, --source):
  IDX       idx3-ubyte images, .gz or plain; their labels in an idx1 file via --labels
  .npy      float32, float64, uint8, int32 or int64, little-endian, C order; samples on axis 0
  .csv      numeric, one sample a row; the label column is --label-column, by default a header
            column named label/class/target/y, else none when a row is exactly one sample,
            else the last column
  folder    PNG/JPEG images, one sub-folder per class (sorted names = classes 0, 1, ...);
            a flat folder is an unlabelled stream. Images must have the model's height and
            width, or take --resize; gray and RGB become the model's channel count
Pixel data (IDX, uint8 .npy, images) is divided by 255, then normalised per channel by --mean
and --std where given (as torchvision's ToTensor and Normalize); float .npy and CSV values are fed
as they are. --labels takes an idx1 file, an integer .npy, or a .csv/.txt file with one label a line.
Token models (int64/int32 inputs, e.g. BERT or GPT exports): --data (--stream) is a .npy of
token ids [sequences, length], or text that the model's own tokenizer turns into ids:
  .txt      one text a line (next-token, seq2seq, an unlabelled stream)
  .csv/.tsv a header row, then one example a row: the text, or a pair of texts in two columns
            (--text-column picks them), and its label (--label-column, as above; class names
            become indices by config.json's label2id, else in sorted order); --task pairs: an
            anchor, a positive and any hard negatives, one column each
  .jsonl    one JSON object a line, with the same columns; --task tag: {"tokens": [words],
            "ner_tags": [a label per word]} as HF datasets write it (or --label-column)
  .conll    --task tag: a word and its label (the last column) a line, a blank line between
            sentences; a word's first token carries its label, the rest are not scored
The tokenizer is --tokenizer (tokenizer.json or its folder), else the tokenizer.json beside the
model or one folder up (transformers.js keeps onnx/model.onnx under the model folder). Texts get
the tokenizer's special tokens, are cut to --max-length (default: the model's fixed length,
else tokenizer_config.json's model_max_length, else 512) and padded with its pad token. The CLI
makes attention_mask (0 at --pad-token, else 1), token_type_ids (0, or a pair's segments) and
position_ids (0..length-1) where the model has them.`;

const TEXT_HELP = {
  tokenizer: "token models, text data: the model's tokenizer.json or its folder (default: beside the model or one folder up)",
  maxLength: 'token models, text data: tokens a sequence at most (default: the model\'s fixed length, else the tokenizer\'s model_max_length, else 512)',
  textColumn: 'token models, .csv/.tsv/.jsonl text: the text column, or two comma-separated for pairs (default: every column but the label\'s)',
};

program
  .command('inspect')
  .description('what a model takes and gives, its ops and parameters, and what refit can train in it')
  .argument('<model>', 'an ONNX model')
  .option('--json', 'print machine-readable JSON')
  .addHelpText('after', examples('refit inspect models/fmnist-cnn.onnx', 'refit inspect model.onnx --json | jq .blockers'))
  .action(async (model: string, o) => {
    const { inspectModel, formatInspect } = await import('./inspect.ts');
    const r = await inspectModel(model);
    console.log(o.json ? JSON.stringify(r, null, 2) : formatInspect(r));
  });

program
  .command('train')
  .description('fine-tune a model, fully or with a PEFT adapter, on labelled data; writes the model (.onnx) or the adapter folder (HF PEFT layout)')
  .argument('<model>', 'the ONNX model to train')
  .requiredOption('--data <path>', 'training data: IDX, .npy, .csv or an image folder (see below); token models: a .npy of token ids [sequences, length]; --task pairs: [examples, columns, length]; --task seq2seq: the source ids')
  .option('--task <task>', 'classify (labelled samples), next-token (a language model: each position predicts the next token), tag (token classification, named entities: --labels a .npy [N, length] of a class per token, -100 where none), pairs (an embedding model: anchor, positive and optional hard negatives per example, in-batch negatives as sentence-transformers trains), seq2seq (an encoder-decoder in two files: <model> is the encoder, --decoder the decoder, --labels the target ids), segment (a segmenter\'s [N, classes, H, W] logits, --labels a .npy of masks [N, H, W]), ctc (a speech or text recogniser\'s [N, frames, classes] logits with the CTC loss: --data audio or features, --labels a .npy of label sequences [N, length] filled with -100, --pad-token the blank, default 0; or --data a PaddleOCR recognition label file, image<TAB>transcript a line, with --vocab) or regress (an output of values, e.g. a depth map, with the mean squared error: --labels a float .npy of targets [N, ...] of the output\'s shape)', 'classify')
  .option('--decoder <file>', '--task seq2seq: the decoder file (decoder_model.onnx or decoder_model_merged.onnx); both files are written into --out (an --adapter folded in)')
  .option('--decoder-start <id>', "--task seq2seq: the decoder's start token (config.json's decoder_start_token_id; default --pad-token)")
  .option('--ignore-index <v>', '--task segment: the mask value of pixels left out (default 255, the void of VOC-style masks)')
  .option('--loss <loss>', '--task regress: mse (default), l1, smooth-l1 or huber (PyTorch\'s F.l1_loss, F.smooth_l1_loss and F.huber_loss with β = δ = 1: outlying targets weigh less)')
  .option('--vocab <file>', '--task ctc: a Hugging Face vocab.json (or the model folder holding it; its tokenizer_config.json read too) that turns --labels transcripts (.txt, one per line) into ids; its pad token is the blank. A .txt is a PaddleOCR character dictionary (ppocr_keys_v1.txt): blank 0, line k class k + 1, then the space')
  .option('--pooling <mode>', '--task pairs: token states to one embedding by mean over the attention mask (default) or cls (the first token)')
  .option('--pad-token <id>', 'token models: the padding token id (attention_mask 0 there; next-token: positions before it get no label; text data: the tokenizer\'s by default)')
  .option('--tokenizer <file>', TEXT_HELP.tokenizer)
  .option('--max-length <n>', TEXT_HELP.maxLength)
  .option('--text-column <names>', TEXT_HELP.textColumn)
  .option('--labels <path>', 'labels, when --data has none: idx1, .npy or .csv/.txt; --task seq2seq: the target token ids [sequences, length]; --task segment: masks (.npy [N, H, W] or a folder of PNG masks)')
  .option('--label-column <col>', 'CSV: the label column (a header name, 0-based index, last or none)')
  .option('--adapter <method>', 'train an adapter instead of the whole model: lora, dora, ia3, bottleneck, bitfit, norm-affine')
  .option('--rank <r>', 'LoRA/DoRA rank', '8')
  .option('--alpha <a>', 'LoRA/DoRA alpha (default 8, as HF PEFT)')
  .option('--targets <list>', 'layers the adapter attaches to: comma-separated module names or /regex/ (default: every layer the method supports; LoRA and DoRA pass over grouped convolutions)')
  .option('--form <form>', 'bottleneck form: houlsby, pfeiffer or parallel', 'houlsby')
  .option('--trainable <sel>', 'full training: which parameters, all or /regex/', 'all')
  .option('--keep-ties', 'keep every tie the exporter wrote, tensors of one value too (by default a weight stored twice trains as one tensor, as PyTorch ties it: a tied lm_head folded into a transposed copy of the embedding, a module called twice; tensors of one value, such as fresh BatchNorm ones, are separate parameters)')
  .option('--untie', 'train each copy of a weight the exporter stored twice as its own parameter (loadModel\'s keepTies: false)')
  .option('--low-memory', 'frozen weights are not pre-packed by onnxruntime a second time: 11-20% less peak memory on a large frozen base (a 135M-parameter decoder\'s LoRA run), a few % slower')
  .option('--epochs <n>', 'passes over the training set', '1')
  .option('--batch-size <n>', 'batch size', '32')
  .option('--lr <lr>', 'AdamW learning rate (default 1e-3 full, 5e-3 adapters)')
  .option('--weight-decay <wd>', 'AdamW weight decay', '0.01')
  .option('--clip-norm <c>', 'clip the gradient norm (0: off)', '1')
  .option('--val-split <f>', 'fraction held out for validation', '0.1')
  .option('--batch-norm <mode>', 'BatchNorm during training: train (batch statistics; default for full training) or eval (running statistics; default for adapters)')
  .option('--seed <n>', 'seed for the split and the shuffling', '0')
  .option('--logits <output>', 'the output holding class scores (default: "logits", else the first output); --task pairs: the embeddings (default: last_hidden_state or sentence_embedding)')
  .option('--mean <values>', 'pixel data: per-channel mean to subtract after scaling to [0, 1], comma-separated (e.g. ImageNet 0.485,0.456,0.406)')
  .option('--std <values>', 'pixel data: per-channel std to divide by, with --mean (e.g. ImageNet 0.229,0.224,0.225)')
  .option('--resize <size|stretch>', "image folders of another size: scale the shorter side to <size>, then crop the model's H×W from the centre (torchvision's Resize + CenterCrop, e.g. 256 for 224×224), or 'stretch' to H×W")
  .option('--preprocessor <file>', "a Hugging Face preprocessor_config.json (or the folder holding it): its resize, crop and normalisation as --resize, --mean and --std, where those are not given; --task ctc: a Wav2Vec2FeatureExtractor\'s per-utterance audio normalisation")
  .requiredOption('--out <path>', 'where to write: a .onnx file (full training), a folder (adapter; --task seq2seq: both files)')
  .option('--json', 'print machine-readable JSON (no progress bar)')
  .addHelpText('after', examples(
    'refit train models/fmnist-cnn.onnx --data t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz --epochs 2 --out tuned.onnx',
    'refit train models/fmnist-vit.onnx --data images/ --adapter lora --rank 8 --targets "/attn\\.(q|v)$/" --epochs 3 --out vit-lora/',
    'refit train model.onnx --data rows.csv --label-column label --adapter bitfit --lr 1e-2 --out bitfit/',
    'refit train gpt.onnx --task next-token --data token-ids.npy --pad-token 0 --adapter lora --rank 8 --out gpt-lora/',
    'refit train bert-ner.onnx --task tag --data token-ids.npy --labels tags.npy --pad-token 0 --adapter lora --out ner-lora/   # tags.npy: [N, length], -100 where none',
    'refit train decoder_model_merged.onnx --task next-token --data token-ids.npy --out tuned_merged.onnx   # a KV-cache export: trained without the cache, written back with it',
    'refit train bert.onnx --data token-ids.npy --labels labels.npy --pad-token 0 --adapter lora --out bert-lora/',
    'refit train all-MiniLM-L6-v2.onnx --task pairs --data pairs.npy --pad-token 0 --adapter lora --out minilm-lora/   # pairs.npy: [examples, 2 or more, length]',
    'refit train encoder_model.onnx --decoder decoder_model_merged.onnx --task seq2seq --data source-ids.npy --labels target-ids.npy --pad-token 58100 --out opus-mt-tuned/',
    'refit train deeplabv3.onnx --task segment --data images/ --labels masks/ --adapter lora --out deeplab-lora/   # masks/: a PNG per image, same name',
    'refit train wav2vec2-base-960h.onnx --task ctc --data audio.npy --labels transcripts.txt --vocab wav2vec2-base-960h/ --preprocessor wav2vec2-base-960h/ --adapter lora --out w2v-lora/   # audio.npy [n, samples] at 16 kHz, a transcript per line',
    'refit train ch_PP-OCRv4_rec_infer.onnx --task ctc --data rec_gt_train.txt --vocab ppocr_keys_v1.txt --adapter lora --out ocr-lora/   # PaddleOCR\'s label file: image path<TAB>transcript a line',
    'refit train encoder_model.onnx --decoder decoder_model_merged.onnx --task seq2seq --data source-ids.npy --labels target-ids.npy --pad-token 58100 --adapter lora --out opus-mt-lora/   # folded into both files',
  ) + '\n' + dataHelp)
  .action(async (model: string, o) => {
    const { runTrain, formatTrainSummary } = await import('./train.ts');
    const r = await runTrain(model, o);
    console.log(o.json ? JSON.stringify(r, null, 2) : formatTrainSummary(r));
  });

program
  .command('adapt')
  .description('adapt a model on a stream (a test-time adaptation method or the continual controller) and write its predictions')
  .argument('<model>', 'the ONNX model')
  .requiredOption('--method <method>', 'a TTA method (source, bn-adapt, tent, eata, sar, cotta, rmt, rdumb, roid, rotta, actmad, lame, t3a), continual, or for a language model dynamic-eval')
  .requiredOption('--stream <path>', 'the stream, in file order: IDX, .npy, .csv or an image folder (see below)')
  .option('--labels <path>', 'labels of the stream, to score the predictions (never shown to the method)')
  .option('--label-column <col>', 'CSV: the label column (a header name, 0-based index, last or none)')
  .option('--batch-size <n>', 'batch size', '64')
  .option('--source <path>', 'labelled in-distribution data: EATA\'s Fisher, CoTTA\'s threshold, RMT\'s prototypes, the controller\'s calibration; ActMAD\'s activation statistics (labels not needed)')
  .option('--source-labels <path>', 'labels of --source, when it has none')
  .option('--logits <output>', 'the output holding class scores')
  .option('--mean <values>', 'pixel data: per-channel mean to subtract after scaling to [0, 1], comma-separated (e.g. ImageNet 0.485,0.456,0.406)')
  .option('--std <values>', 'pixel data: per-channel std to divide by, with --mean (e.g. ImageNet 0.229,0.224,0.225)')
  .option('--resize <size|stretch>', "image folders of another size: scale the shorter side to <size>, then crop the model's H×W from the centre (torchvision's Resize + CenterCrop, e.g. 256 for 224×224), or 'stretch' to H×W")
  .option('--preprocessor <file>', "a Hugging Face preprocessor_config.json (or the folder holding it): its resize, crop and normalisation as --resize, --mean and --std, where those are not given")
  .option('--pad-token <id>', 'token models: the padding token id (attention_mask 0 there; text data: the tokenizer\'s by default)')
  .option('--tokenizer <file>', TEXT_HELP.tokenizer)
  .option('--max-length <n>', TEXT_HELP.maxLength)
  .option('--text-column <names>', TEXT_HELP.textColumn)
  .option('--method-options <json>', 'options of the method as a JSON object, e.g. \'{"lr": 0.001}\' (docs/tta.md lists each method\'s); for continual, on top of the recommended set')
  .option('--embedding <output>', 'continual: an [N, D] output for the error memory (default: "features" when present)')
  .option('--feedback-delay <batches>', 'continual: give the controller each batch\'s labels this many batches later (delayed feedback; needs --labels)')
  .option('--no-deep', 'continual: keep level 3 on the normalization adapters (by default, with --source, level 3 runs RMT on it)')
  .option('--deep-params <all|norm>', 'continual with --source: what the deep learner adapts (default: every parameter; the normalization layers\' scales and shifts on models over 1M parameters)')
  .option('--input-align', 'align each batch\'s input, per channel, to the mean and within-sample spread of --source before the method sees it (undoes brightness and contrast shifts; docs/tta.md); on by default for continual with --source')
  .option('--no-input-align', 'continual with --source: do not align the input')
  .requiredOption('--out <file>', 'predictions: .csv or .jsonl (id, prediction, confidence, label when given; a segmenter: id, mean confidence, pixel accuracy against --labels masks)')
  .option('--report <file>', 'HTML report of the error over the stream against the unadapted model (needs labels)')
  .option('--json', 'print machine-readable JSON (no progress bar)')
  .addHelpText('after', examples(
    'refit adapt models/fmnist-cnn.onnx --method tent --stream shifted.npy --labels shifted-labels.npy --out preds.csv --report report.html',
    'refit adapt models/fmnist-cnn.onnx --method continual --stream camera/ --out preds.jsonl',
    'refit adapt models/fmnist-cnn.onnx --method continual --stream camera/ --source clean/ --out preds.jsonl',
    'refit adapt models/fmnist-vit.onnx --method source --stream camera/ --source clean/ --input-align --out preds.csv',
    'refit adapt bert.onnx --method tent --stream token-ids.npy --pad-token 0 --out preds.csv',
    'refit adapt decoder_model_merged.onnx --method dynamic-eval --stream token-ids.npy --pad-token 0 --out log-loss.csv',
  ) + '\n' + dataHelp)
  .action(async (model: string, o) => {
    const { runAdapt, formatAdapt } = await import('./adapt.ts');
    const r = await runAdapt(model, o);
    console.log(o.json ? JSON.stringify(r, null, 2) : formatAdapt(r));
  });

program
  .command('eval')
  .description('accuracy and cross-entropy of a model on a labelled set, or (--task next-token) a language model\'s on token sequences')
  .argument('<model>', 'the ONNX model')
  .requiredOption('--data <path>', 'labelled data: IDX, .npy, .csv or an image folder (see below); --task next-token: a .npy of token ids; --task pairs: [examples, columns, length]; --task seq2seq: the source ids')
  .option('--decoder <file>', '--task seq2seq: the decoder file; the model argument is the encoder, --labels the target ids')
  .option('--decoder-start <id>', "--task seq2seq: the decoder's start token (config.json's decoder_start_token_id; default --pad-token)")
  .option('--ignore-index <v>', '--task segment: the mask value of pixels left out (default 255)')
  .option('--vocab <file>', '--task ctc: a Hugging Face vocab.json (or the model folder), or a PaddleOCR character dictionary (.txt), for --labels transcripts (.txt)')
  .option('--task <task>', 'classify (labelled samples), next-token (a language model: each position scored on the next token), tag (token accuracy of a token classifier against --labels [N, length], -100 not scored), pairs (an embedding model: how often an anchor\'s nearest candidate is its own positive), seq2seq (an encoder-decoder on target sequences), segment (pixel accuracy of a segmenter against --labels masks), ctc (label error rate of a speech or text recogniser\'s greedy decoding against --labels sequences, or a PaddleOCR recognition label file\'s transcripts) or regress (mean squared and absolute error against --labels, a float .npy of targets)', 'classify')
  .option('--pooling <mode>', '--task pairs: mean (over the attention mask, the default) or cls')
  .option('--adapter <folder>', 'an adapter folder (HF PEFT layout, as refit train --adapter writes) applied to the model, not merged (classify, tag, ctc, segment, regress)')
  .option('--labels <path>', 'labels, when --data has none; --task seq2seq: the target token ids; --task segment: masks (.npy [N, H, W] or a folder of PNG masks)')
  .option('--label-column <col>', 'CSV: the label column (a header name, 0-based index, last or none)')
  .option('--batch-size <n>', 'batch size', '256')
  .option('--logits <output>', 'the output holding class scores')
  .option('--mean <values>', 'pixel data: per-channel mean to subtract after scaling to [0, 1], comma-separated (e.g. ImageNet 0.485,0.456,0.406)')
  .option('--std <values>', 'pixel data: per-channel std to divide by, with --mean (e.g. ImageNet 0.229,0.224,0.225)')
  .option('--resize <size|stretch>', "image folders of another size: scale the shorter side to <size>, then crop the model's H×W from the centre (torchvision's Resize + CenterCrop, e.g. 256 for 224×224), or 'stretch' to H×W")
  .option('--preprocessor <file>', "a Hugging Face preprocessor_config.json (or the folder holding it): its resize, crop and normalisation as --resize, --mean and --std, where those are not given; --task ctc: a Wav2Vec2FeatureExtractor\'s per-utterance audio normalisation")
  .option('--pad-token <id>', 'token models: the padding token id (attention_mask 0 there; text data: the tokenizer\'s by default)')
  .option('--tokenizer <file>', TEXT_HELP.tokenizer)
  .option('--max-length <n>', TEXT_HELP.maxLength)
  .option('--text-column <names>', TEXT_HELP.textColumn)
  .option('--json', 'print machine-readable JSON (no progress bar)')
  .addHelpText('after', examples(
    'refit eval models/fmnist-cnn.onnx --data data/fashion-mnist/t10k-images-idx3-ubyte.gz --labels data/fashion-mnist/t10k-labels-idx1-ubyte.gz',
    'refit eval tuned.onnx --data rows.csv --json',
    'refit eval bert.onnx --data token-ids.npy --labels labels.npy --pad-token 0',
    'refit eval decoder_model_merged.onnx --task next-token --data token-ids.npy --pad-token 0',
    'refit eval all-MiniLM-L6-v2.onnx --task pairs --data held-out-pairs.npy --pad-token 0',
    'refit eval encoder_model.onnx --decoder decoder_model_merged.onnx --task seq2seq --data source-ids.npy --labels target-ids.npy --pad-token 58100',
    'refit eval ch_PP-OCRv4_rec_infer.onnx --adapter ocr-lora/ --task ctc --data rec_gt_test.txt --vocab ppocr_keys_v1.txt',
  ) + '\n' + dataHelp)
  .action(async (model: string, o) => {
    const { runEval, formatEval } = await import('./eval.ts');
    const r = await runEval(model, o);
    console.log(o.json ? JSON.stringify(r, null, 2) : formatEval(r));
  });

program
  .command('bench')
  .description('time inference, training steps (full, norm-affine, LoRA) and TTA methods on random inputs of the model\'s shape')
  .argument('<model>', 'the ONNX model')
  .option('--batch-size <n>', 'batch size', '64')
  .option('--threads <n>', 'onnxruntime intra-op threads', '2')
  .option('--methods <list>', 'comma-separated TTA methods to time (predict + adapt)', 'tent,eata')
  .option('--rank <r>', 'LoRA rank of the LoRA step (on every layer LoRA supports)', '8')
  .option('--reps <n>', 'timed calls per case (the median is reported)', '20')
  .option('--warmup <n>', 'untimed calls after the first one', '3')
  .option('--logits <output>', 'the output holding class scores')
  .option('--json', 'print machine-readable JSON (no progress bar)')
  .addHelpText('after', examples(
    'refit bench models/fmnist-cnn.onnx',
    'refit bench models/fmnist-vit.onnx --batch-size 32 --threads 4 --methods tent,eata,sar --json',
  ))
  .action(async (model: string, o) => {
    const { runBench, formatBench } = await import('./bench.ts');
    const r = await runBench(model, o);
    console.log(o.json ? JSON.stringify(r, null, 2) : formatBench(r));
  });

program
  .command('demo')
  .description('score the shipped CNN, unadapted and with every adaptation method, on the continual Fashion-MNIST-C stream')
  .option('--quick', 'a short run: 3 batches per corruption (default 6)')
  .option('--full', 'one pass over the 10k test set per corruption (slow: the benchmark stream)')
  .option('--batches <n>', 'batches per corruption (default 6; --quick 3)', (v) => parseInt(v, 10))
  .option('--json', 'print machine-readable JSON instead of the table')
  .option('--model <path>', 'ONNX model with input [N,1,28,28] and logits output (default: the shipped CNN)')
  .option('--methods <list>', 'comma-separated methods (default: all)')
  .option('--batch-size <n>', 'batch size', (v) => parseInt(v, 10))
  .option('--severity <n>', 'corruption severity 1-5', (v) => parseInt(v, 10))
  .option('--out <file>', 'HTML report path', 'refit-demo-report.html')
  .addHelpText('after', examples('refit demo --quick', 'refit demo --methods source,tent,eata --json'))
  .action(async (o) => {
    const { runDemo, formatTable } = await import('./demo.ts');
    const r = await runDemo({ ...o, methods: o.methods?.split(',').map((s: string) => s.trim()) });
    if (o.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    } else {
      console.log(formatTable(r));
      console.log(`\nReport: ${r.report}  (${r.seconds.toFixed(1)} s)`);
    }
  });

const adapter = program.command('adapter').description('inspect adapter folders (HF PEFT layout) and merge them into a model');
adapter
  .command('info')
  .description('what an adapter folder holds: method, rank, target modules, size; with --model, its share of that model')
  .argument('<dirs...>', 'adapter folders (adapter_model.safetensors + adapter_config.json)')
  .option('--model <path>', 'check each adapter against this ONNX model and account for it')
  .option('--json', 'print machine-readable JSON')
  .addHelpText('after', examples('refit adapter info my-lora/', 'refit adapter info my-lora/ --model models/fmnist-vit.onnx --json'))
  .action(async (dirs: string[], o) => {
    const [{ adapterInfo, formatInfo }, { loadModel }] = await Promise.all([import('./adapter.ts'), import('../model.ts')]);
    const base = o.model ? await loadModel(o.model) : undefined; // loaded once for every folder
    const infos = dirs.map((d) => adapterInfo(d, base));
    console.log(o.json ? JSON.stringify(infos, null, 2) : infos.map(formatInfo).join('\n'));
    await base?.release();
  });
adapter
  .command('merge')
  .description('fold adapters into a model\'s weights and save a plain ONNX model (no extra latency)')
  .argument('<model>', 'the base ONNX model')
  .argument('<dirs...>', 'adapter folders, applied in order')
  .requiredOption('-o, --out <path>', 'where to write the merged model')
  .addHelpText('after', examples('refit adapter merge models/fmnist-vit.onnx my-lora/ -o vit-merged.onnx'))
  .action(async (model: string, dirs: string[], o) => {
    const { mergeAdapters } = await import('./adapter.ts');
    const r = await mergeAdapters(model, dirs, o.out);
    console.log(`merged ${r.adapters.join(', ')} into ${model}: wrote ${r.out}`);
  });

/** The options `refit serve` passes to runServe (src/cli/serve.ts, written with src/serve/). */
export interface ServeCliOptions {
  /** Models to serve, each `path` or `name=path`. */
  model?: string[];
  port: string;
  host: string;
  registry?: string;
  blobs?: string;
  method?: string;
  methodOptions?: string;
  source?: string;
  sourceLabels?: string;
  deep?: boolean;
  deepParams?: string;
  inputAlign?: boolean;
  resize?: string;
  preprocessor?: string;
  padToken?: string;
  cors?: string;
  mean?: string;
  std?: string;
  token?: string;
  protectReads?: boolean;
  maxTenants?: string;
  maxBatch?: string;
  persistEvery?: string;
  microBatchWait?: string;
  microBatchMax?: string;
  inferenceWorkers?: string;
  inferenceThreads?: string;
}

program
  .command('serve')
  .description('an HTTP service: predictions per tenant with adaptation, feedback, and a versioned adapter registry')
  .option('--model <path>', 'a model to serve, path or name=path (repeat for more)', (v: string, prev: string[] = []) => [...prev, v])
  .option('--port <n>', 'port (0: any free port)', '8080')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--registry <spec>', 'the adapter registry: a SQLite file, or postgres://user@host:port/db with --blobs (default: in memory, lost at exit)')
  .option('--blobs <spec>', 'where a PostgreSQL registry keeps adapter bytes: file:DIR or s3://bucket?endpoint=http://host:port')
  .option('--method <method>', 'adaptation per tenant: none, a TTA method or continual')
  .option('--method-options <json>', 'options of the method as a JSON object, e.g. \'{"lr": 0.0001}\'; for continual, on top of the recommended set')
  .option('--source <path>', 'labelled in-distribution data for every model: the controller\'s calibration, deep learner and input alignment; EATA\'s Fisher, CoTTA\'s threshold, RMT\'s prototypes')
  .option('--source-labels <path>', 'labels of --source, when it has none')
  .option('--no-deep', 'continual: keep level 3 on the normalization adapters (by default, with --source, level 3 runs RMT on it)')
  .option('--deep-params <all|norm>', 'continual with --source: what the deep learner adapts (default: every parameter; the normalization layers\' scales and shifts on models over 1M parameters)')
  .option('--input-align', 'align each batch\'s input to --source\'s per-channel statistics before the method sees it; on by default for continual with --source')
  .option('--no-input-align', 'continual with --source: do not align the input')
  .option('--resize <size|stretch>', "image inputs ({ images: [base64 PNG/JPEG] }) and a --source image folder of another size: the shorter side to <size>, then the model's H×W from the centre (torchvision's Resize + CenterCrop), or 'stretch'")
  .option('--preprocessor <file>', "a Hugging Face preprocessor_config.json (or the folder holding it): its resize, crop and normalisation as --resize, --mean and --std, where those are not given")
  .option('--mean <values>', 'image inputs and pixel --source data: per-channel mean to subtract after scaling to [0, 1], comma-separated')
  .option('--std <values>', 'image inputs and pixel --source data: per-channel std to divide by, with --mean')
  .option('--pad-token <id>', 'token models (BERT-style, token ids in): the padding id, attention_mask 0 there; requests send the ids alone (default with a tokenizer: its pad token)')
  .option('--tokenizer <file>', 'token models: the tokenizer.json (or its folder) with which requests may send { texts: [...] } (default: each model\'s own beside it or one folder up)')
  .option('--max-length <n>', TEXT_HELP.maxLength)
  .option('--cors <origins>', "web pages that may call the service from a browser: comma-separated origins (https://app.example.com) or '*'")
  .option('--token <token>', 'bearer token for the write routes (default: $REFIT_TOKEN)')
  .option('--protect-reads', 'close the reads too: every route but /healthz needs the token (predict, feedback, listings, /metrics, /docs/json)')
  .option('--max-tenants <n>', 'tenant sessions held in memory; older ones are saved to the registry and released (default 64)')
  .option('--max-batch <n>', 'samples per predict request (default 256)')
  .option('--persist-every <n>', 'save each tenant\'s state to the registry every n batches (default 0: on release and shutdown only)')
  .option('--micro-batch-wait <ms>', 'longest wait for concurrent plain predictions to join one run (default 2; 0: off)')
  .option('--micro-batch-max <n>', 'samples at which a joined run is sent at once (default 32)')
  .option('--inference-workers <n>', 'worker threads for plain predictions, so runs do not block request handling (default 2; 0: on the main thread)')
  .option('--inference-threads <n>', 'onnxruntime threads per inference worker (default 1)')
  .addHelpText('after', examples(
    'refit serve --model cnn=models/fmnist-cnn.onnx --port 8080 --registry adapters.sqlite --method tent',
    'REFIT_TOKEN=secret refit serve --model models/fmnist-cnn.onnx --method continual --source clean/',
    'REFIT_TOKEN=secret refit serve --model models/fmnist-cnn.onnx --protect-reads',
  ))
  .action(async (o: ServeCliOptions) => {
    const { runServe } = await import('./serve.ts');
    await runServe({ ...o, model: o.model ?? [], debug: program.opts().debug === true });
  });

program.parseAsync(process.argv).catch((e: Error) => {
  const debug = program.opts().debug === true || process.argv.includes('--debug');
  console.error(debug ? (e.stack ?? `refit: ${e.message}`) : `refit: ${firstLine(e.message)}`);
  process.exit(1);
});

/** Errors are one line: a multi-line message keeps its first line (the rest shows with --debug). */
function firstLine(m: string): string {
  const lines = m.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length > 1 ? `${lines[0]} (more with --debug)` : lines[0] ?? 'unknown error';
}
