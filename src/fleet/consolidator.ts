// What the cloud worker (src/fleet/worker.ts) calls: one object holding the loaded base model
// and teacher, so a job only passes bytes and samples. Models load once per worker process.
//
//   const c = await createConsolidator({ base: 'models/fmnist-cnn.onnx' });
//   const { files, metrics } = await c.consolidate({ adapter, uploads: [{ dims, data }], replay });
//   const fleet = c.aggregate([{ files, samples }, …]);
import { loadModel, type RefitModel } from '../model.ts';
import type { AdapterFiles } from '../peft/files.ts';
import { consolidate, type ConsolidateOptions, type ConsolidateResult, type Samples } from './consolidate.ts';
import { aggregate, type AggregateInput, type AggregateOptions } from './aggregate.ts';
import { modelTeacher, ensembleTeacher, type Teacher } from './teacher.ts';

/** A device round's work: its current adapter (null: none yet), this round's uploads, earlier uploads to replay. */
export interface ConsolidateJob {
  adapter: AdapterFiles | null;
  uploads: Samples[];
  replay?: Samples[];
  /** Seed of the replay draw and minibatch order (the worker passes the round, so a retried job gives the same bytes). */
  seed?: number;
}

export interface Consolidator {
  consolidate(job: ConsolidateJob): Promise<ConsolidateResult>;
  /** Merge device adapters into the fleet adapter (FedAvg by sample count, or TIES). */
  aggregate(inputs: AggregateInput[], opts?: Omit<AggregateOptions, 'base'>): AdapterFiles;
  release(): Promise<void>;
}

/**
 * Teachers (src/fleet/teacher.ts), compared on validation streams in docs/fleet.md:
 * - 'vit': the shipped ViT (models/fmnist-vit.onnx);
 * - 'cnn': the device's CNN with BatchNorm statistics of the uploads it labels;
 * - 'cnn-aug': the same, softmax averaged over the plain and 4 augmented copies;
 * - 'ensemble': the mean of 'vit' and 'cnn';
 * - 'model': a larger cloud model of the user's (`teacherModel`, CEMA's setting), with BatchNorm
 *   statistics of the uploads it labels when it has BatchNorm;
 * - 'model+cnn': the mean of 'model' and 'cnn'.
 */
export type TeacherChoice = 'vit' | 'cnn' | 'cnn-aug' | 'ensemble' | 'model' | 'model+cnn';
export const TEACHERS: readonly TeacherChoice[] = ['vit', 'cnn', 'cnn-aug', 'ensemble', 'model', 'model+cnn'];

export interface ConsolidatorOptions {
  /** The device model: a path or a loaded model. */
  base: string | RefitModel;
  teacher?: TeacherChoice | Teacher;
  /** The ViT's path for 'vit' and 'ensemble'. @default 'models/fmnist-vit.onnx' */
  vit?: string;
  /** The teacher's path for 'model' and 'model+cnn': a classifier with the base's input and classes. Without `teacher`, it is 'model'. */
  teacherModel?: string;
  consolidate?: ConsolidateOptions;
  aggregate?: Omit<AggregateOptions, 'base'>;
  threads?: number;
}

export const DEFAULT_TEACHER: TeacherChoice = 'vit';

export async function makeTeacher(choice: TeacherChoice, base: RefitModel, o: { vit?: string; teacherModel?: string; threads?: number } = {}): Promise<Teacher> {
  const load = (path: string) => loadModel(path, { threads: o.threads ?? 1 });
  const vit = async () => modelTeacher(await load(o.vit ?? 'models/fmnist-vit.onnx'), { name: 'vit', own: true });
  const cnn = () => modelTeacher(base, { name: 'cnn bn-adapted on uploads' });
  const model = async () => {
    if (!o.teacherModel) throw new Error(`teacher '${choice}' needs teacherModel: the path of a classifier with the base model's input and classes`);
    return modelTeacher(await load(o.teacherModel), { name: o.teacherModel, own: true });
  };
  switch (choice) {
    case 'vit': return vit();
    case 'cnn': return cnn();
    case 'cnn-aug': return modelTeacher(base, { augment: 4, name: 'cnn bn-adapted on uploads +4 aug' });
    case 'ensemble': return ensembleTeacher([await vit(), cnn()]);
    case 'model': return model();
    case 'model+cnn': return ensembleTeacher([await model(), cnn()]);
    default: throw new Error(`unknown teacher '${String(choice)}' (known: ${TEACHERS.join(', ')})`);
  }
}

export async function createConsolidator(o: ConsolidatorOptions): Promise<Consolidator> {
  const base = typeof o.base === 'string' ? await loadModel(o.base, { threads: o.threads ?? 1 }) : o.base;
  const teacher = typeof o.teacher === 'object' ? o.teacher : await makeTeacher(o.teacher ?? (o.teacherModel ? 'model' : DEFAULT_TEACHER), base, o);
  return {
    consolidate: (job) => consolidate({
      base, teacher, adapter: job.adapter, uploads: job.uploads, replay: job.replay ?? [],
      options: { ...o.consolidate, ...(job.seed !== undefined ? { seed: job.seed } : {}) },
    }),
    aggregate: (inputs, opts) => aggregate(inputs, { ...o.aggregate, ...opts, base }),
    async release() {
      await teacher.release();
      if (typeof o.base === 'string') await base.release();
    },
  };
}

export type { Samples, ConsolidateResult, ConsolidateOptions } from './consolidate.ts';
export type { AggregateInput, AggregateOptions } from './aggregate.ts';
