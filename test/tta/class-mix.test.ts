// The class-mix region's geometry (src/tta/class-mix.ts): the convex hull of the classes' points
// and the distance to it, which input alignment's class-mix gate compares with its margin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { convexHull, distanceToHull, type Point } from '../../src/tta/class-mix.ts';

const close = (a: number, b: number) => Math.abs(a - b) < 1e-12;

test('convexHull: counter-clockwise corners only (inner and collinear points dropped); a segment; one point', () => {
  const square: Point[] = [[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [1, 0], [0.5, 1.5]];
  assert.deepEqual(convexHull(square), [[0, 0], [2, 0], [2, 2], [0, 2]]);
  assert.deepEqual(convexHull([[3, 1], [1, 1], [2, 1]]), [[1, 1], [3, 1]]);
  assert.deepEqual(convexHull([[1, 2], [1, 2]]), [[1, 2]]);
  assert.throws(() => convexHull([]), /no points/);
});

test('distanceToHull: 0 inside and on the boundary; to the nearest edge or corner outside; to a segment and a point', () => {
  const h = convexHull([[0, 0], [2, 0], [2, 2], [0, 2]]);
  assert.equal(distanceToHull([1, 1], h), 0);
  assert.equal(distanceToHull([2, 1], h), 0);
  assert.ok(close(distanceToHull([3, 1], h), 1), 'right of an edge');
  assert.ok(close(distanceToHull([1, -0.5], h), 0.5), 'below an edge');
  assert.ok(close(distanceToHull([3, 3], h), Math.SQRT2), 'past a corner');
  const seg = convexHull([[0, 0], [2, 0]]);
  assert.ok(close(distanceToHull([1, 0.25], seg), 0.25) && close(distanceToHull([-1, 0], seg), 1), 'a segment has no inside');
  assert.ok(close(distanceToHull([3, 4], convexHull([[0, 0]])), 5));
});
