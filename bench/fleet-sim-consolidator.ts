// The consolidator the fleet simulation's workers load (scripts/fleet-worker.ts
// --consolidator-module): the default one (src/fleet/consolidator.ts) with its options taken
// from the environment, so bench/fleet-simulation.ts can size a job to fit a bounded run.
//   FLEET_SIM_TEACHER (vit) FLEET_SIM_TEACHER_MODEL (for 'model', 'model+cnn')
//   FLEET_SIM_LR (consolidate's default) FLEET_SIM_EPOCHS (4) FLEET_SIM_REPLAY (64) FLEET_SIM_BATCH (32)
import { createConsolidator as create, type Consolidator, type TeacherChoice } from '../src/fleet/consolidator.ts';

export async function createConsolidator(): Promise<Consolidator> {
  const e = process.env;
  const int = (k: string, d: number) => {
    const v = Number(e[k] ?? d);
    if (!Number.isInteger(v) || v < 0) throw new Error(`${k} must be a non-negative integer, got ${e[k]}`);
    return v;
  };
  const positive = (k: string) => {
    const v = Number(e[k]);
    if (!(v > 0)) throw new Error(`${k} must be a positive number, got ${e[k]}`);
    return v;
  };
  return create({
    base: e.FLEET_SIM_BASE ?? 'models/fmnist-cnn.onnx',
    teacher: (e.FLEET_SIM_TEACHER ?? 'vit') as TeacherChoice,
    ...(e.FLEET_SIM_TEACHER_MODEL ? { teacherModel: e.FLEET_SIM_TEACHER_MODEL } : {}),
    threads: 1,
    consolidate: { ...(e.FLEET_SIM_LR ? { lr: positive('FLEET_SIM_LR') } : {}), epochs: int('FLEET_SIM_EPOCHS', 4), replay: int('FLEET_SIM_REPLAY', 64), batch: int('FLEET_SIM_BATCH', 32) },
  });
}
