// RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU), as the paper's code
// (github.com/BIT-DA/RoTTA, core/utils/memory.py), line by line: a bank of `capacity` samples in
// per-class lists (class = the teacher's pseudo-label). A new sample (age 0, uncertainty = its
// entropy) enters if its class holds fewer than capacity/C samples and the bank has room; if the
// bank is full, it replaces the highest-scoring sample of the majority classes; if its class is
// full, the highest-scoring sample of its own class — in both cases only if that score exceeds
// the new sample's. Score = λ_t·1/(1 + exp(−age/capacity)) + λ_u·uncertainty/ln C. After every
// insertion attempt every stored sample ages by one.

export interface MemoryItem {
  data: Float32Array;
  uncertainty: number;
  age: number;
}

export class CSTU {
  readonly perClass: number;
  /** Per-class lists, in insertion order (as the code's self.data). */
  data: MemoryItem[][];

  constructor(readonly capacity: number, readonly numClass: number, readonly lambdaT = 1, readonly lambdaU = 1) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`CSTU: capacity must be a positive integer, got ${capacity}`);
    if (!Number.isInteger(numClass) || numClass < 2) throw new Error(`CSTU: needs at least 2 classes, got ${numClass}`);
    this.perClass = capacity / numClass;
    this.data = Array.from({ length: numClass }, () => []);
  }

  occupancy(): number {
    return this.data.reduce((s, l) => s + l.length, 0);
  }

  perClassCounts(): number[] {
    return this.data.map((l) => l.length);
  }

  heuristicScore(age: number, uncertainty: number): number {
    return (this.lambdaT * 1) / (1 + Math.exp(-age / this.capacity)) + (this.lambdaU * uncertainty) / Math.log(this.numClass);
  }

  add(x: Float32Array, prediction: number, uncertainty: number): boolean {
    if (!Number.isInteger(prediction) || prediction < 0 || prediction >= this.numClass) throw new Error(`CSTU.add: class ${prediction} out of range [0, ${this.numClass})`);
    const score = this.heuristicScore(0, uncertainty);
    const added = this.removeInstance(prediction, score);
    if (added) this.data[prediction]!.push({ data: x, uncertainty, age: 0 });
    this.addAge();
    return added;
  }

  private removeInstance(cls: number, score: number): boolean {
    if (this.data[cls]!.length < this.perClass) {
      if (this.occupancy() < this.capacity) return true;
      return this.removeFromClasses(this.majorityClasses(), score);
    }
    return this.removeFromClasses([cls], score);
  }

  private removeFromClasses(classes: number[], base: number): boolean {
    let maxClass = -1, maxIndex = -1, maxScore = -Infinity;
    for (const c of classes) {
      this.data[c]!.forEach((item, i) => {
        const s = this.heuristicScore(item.age, item.uncertainty);
        if (maxClass < 0 || s >= maxScore) { maxScore = s; maxIndex = i; maxClass = c; }
      });
    }
    if (maxClass < 0) return true;
    if (maxScore > base) {
      this.data[maxClass]!.splice(maxIndex, 1);
      return true;
    }
    return false;
  }

  private majorityClasses(): number[] {
    const counts = this.perClassCounts();
    const max = Math.max(...counts);
    return counts.flatMap((c, i) => (c === max ? [i] : []));
  }

  private addAge(): void {
    for (const l of this.data) for (const item of l) item.age++;
  }

  /** The stored samples in class order and their ages divided by the capacity (the code's get_memory). */
  memory(): { data: Float32Array[]; ages: number[] } {
    const data: Float32Array[] = [], ages: number[] = [];
    for (const l of this.data) for (const item of l) { data.push(item.data); ages.push(item.age / this.capacity); }
    return { data, ages };
  }

  clear(): void {
    this.data = Array.from({ length: this.numClass }, () => []);
  }
}

/** RoTTA's timeliness reweighting of a sample of normalised age a: exp(−a)/(1 + exp(−a)). */
export function timelinessWeight(a: number): number {
  return Math.exp(-a) / (1 + Math.exp(-a));
}
