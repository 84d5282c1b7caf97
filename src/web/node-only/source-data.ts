// Stands in for src/tta/source-data.ts (which reads refit's bundled Fashion-MNIST files through
// node:fs) in the web bundle (scripts/build-web.ts maps it here). In a page the in-distribution
// set comes from the page: parseIdxImages/parseIdxLabels on fetched bytes.
import type { Tensor } from '../../onnx/tensor.ts';

export const SOURCE_SET_FILES = { images: 'train-2k-images-idx3-ubyte.gz', labels: 'train-2k-labels-idx1-ubyte.gz' } as const;

export interface SourceSet {
  images: Tensor;
  labels: Uint8Array;
  n: number;
}

export function loadSourceSet(_opts: { dir?: string; limit?: number } = {}): SourceSet {
  throw new Error(`loadSourceSet reads ${SOURCE_SET_FILES.images} from disk, which only Node can do; in a browser fetch the files and build the set with data.parseIdxImages / data.parseIdxLabels`);
}

export function sourceDataOptions(method: string, _set: SourceSet, _o: { quick?: boolean } = {}): Record<string, unknown> {
  throw new Error(`sourceDataOptions('${method}') is Node-only in this build; in a browser pass the method's data options yourself (EATA fisherData, CoTTA thresholdData, RMT sourceData/sourceLabels)`);
}
