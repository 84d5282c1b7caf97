// Where a batch's input moments can lie when nothing shifted but its class mix. A batch's mean of
// its samples' means, and its pooled within-sample variance, are each the class-proportion-weighted
// average of the classes' own values (in expectation), so over every class mix they fill the
// convex hull of the classes' (mean, variance) points. input-align.ts aligns a channel only when
// the batch's point lies outside that hull by more than a margin: a batch of a few classes moves
// its moments too, and aligning those away is what hurt alignment under correlated labels.
//
// Plain 2-D geometry: Andrew's monotone chain for the hull, then the distance to its edges.

/** A point in the plane: (channel mean, within-sample variance), scaled as input-align.ts scales them. */
export type Point = readonly [number, number];

const cross = (o: Point, a: Point, b: Point) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);

/** The convex hull, counter-clockwise, without collinear points: one point, a segment (two), or a polygon. */
export function convexHull(points: readonly Point[]): Point[] {
  if (points.length === 0) throw new Error('convexHull: no points');
  const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]).filter((q, i, all) => i === 0 || q[0] !== all[i - 1]![0] || q[1] !== all[i - 1]![1]);
  const chain = (pts: Point[]) => {
    const out: Point[] = [];
    for (const q of pts) {
      while (out.length >= 2 && cross(out[out.length - 2]!, out[out.length - 1]!, q) <= 0) out.pop();
      out.push(q);
    }
    return out;
  };
  const lower = chain(p), upper = chain(p.reverse());
  // One distinct point: both chains are that point alone, and dropping their ends leaves nothing.
  return p.length === 1 ? [p[0]!] : [...lower.slice(0, -1), ...upper.slice(0, -1)];
}

function segmentDistance(q: Point, a: Point, b: Point): number {
  const dx = b[0] - a[0], dy = b[1] - a[1], len = dx * dx + dy * dy;
  const t = len > 0 ? Math.max(0, Math.min(1, ((q[0] - a[0]) * dx + (q[1] - a[1]) * dy) / len)) : 0;
  return Math.hypot(q[0] - a[0] - t * dx, q[1] - a[1] - t * dy);
}

/** Euclidean distance from q to the hull (as convexHull returns it): 0 inside or on it. */
export function distanceToHull(q: Point, hull: readonly Point[]): number {
  if (hull.length === 1) return Math.hypot(q[0] - hull[0]![0], q[1] - hull[0]![1]);
  let inside = hull.length >= 3, nearest = Infinity;
  for (let i = 0; i < hull.length; i++) {
    const a = hull[i]!, b = hull[(i + 1) % hull.length]!;
    if (cross(a, b, q) < 0) inside = false; // right of a counter-clockwise edge: outside
    nearest = Math.min(nearest, segmentDistance(q, a, b));
  }
  return inside ? 0 : nearest;
}
