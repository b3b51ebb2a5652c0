/**
 * AllReduce, ReduceScatter and AllGather: a reduce-scatter pass, an all-gather pass, or both,
 * over the buffer split into one block per rank (numpy.array_split, so lengths need not divide).
 * Every algorithm only decides which rings or pairs move which blocks.
 *
 * @module
 */

import type { ProgramGenerator } from "../actors/program.ts";
import { type GridAxis, type GroupView, memo } from "./groups.ts";
import { directExchange, type Exchange, type Pass, type Ring, ringPasses } from "./rings.ts";
import { block, blockStart, type Segment, segment } from "./segments.ts";
import type { CollectiveAlgorithm } from "./spec.ts";

/** Which passes run: reduce-scatter, all-gather, or both (AllReduce). */
export interface Passes {
  readonly reduce: boolean;
  readonly gather: boolean;
}

/**
 * Runs the passes on `data` (length `n`; undefined in shape-only mode). After a reduce pass
 * this rank's block holds the reduction; after a gather pass every block is everyone's.
 */
export function reduceGather<R>(
  x: Exchange,
  algorithm: CollectiveAlgorithm,
  g: GroupView,
  data: Float32Array | undefined,
  n: number,
  passes: Passes,
  finish: () => R,
): ProgramGenerator<R> {
  const p = g.members.length;
  if (p < 2 || algorithm === "direct") return direct(x, g, data, n, passes, finish);
  // Ring-based: a list of phases, each a set of rings; reduce-scatter runs them in order,
  // all-gather in reverse order, over the same segments.
  const blocks = memo(g, "blocks", () => Array.from({ length: p }, (_, r) => block(n, p, r)));
  const ringSegments = () => g.ring.map((id) => blocks[g.rankOf[id]]);
  const phases: (readonly Ring[])[] = algorithm === "ring"
    ? [memo(g, "ring", () => [{ members: g.ring, segments: ringSegments(), tag: "podsim:ring" }])]
    : algorithm === "bidirectional-ring"
    ? [memo(g, "bidirectional", () => bidirectional(g.ring, ringSegments(), "podsim:ring"))]
    : g.grid!.axes.map((axis, phase) => torusRings(g, n, phase, axis));
  // A torus line's two directions cost the same per step: they may run in lockstep.
  const lockstep = algorithm === "torus";
  const list: Pass[] = [];
  if (passes.reduce) { for (const rings of phases) list.push({ rings, reduce: true, lockstep }); }
  if (passes.gather) {
    for (const rings of [...phases].reverse()) list.push({ rings, reduce: false, lockstep });
  }
  return ringPasses(x, data, list, finish);
}

/** Direct: every rank sends each other rank its block (reduce), then its own block (gather). */
function* direct<R>(
  x: Exchange,
  g: GroupView,
  data: Float32Array | undefined,
  n: number,
  passes: Passes,
  finish: () => R,
): ProgramGenerator<R> {
  const p = g.members.length;
  const blocks = memo(g, "blocks", () => Array.from({ length: p }, (_, r) => block(n, p, r)));
  {
    const mine = blocks[g.rank];
    const to = Array.from({ length: p - 1 }, (_, t) => (g.rank + t + 1) % p);
    const from = Array.from({ length: p - 1 }, (_, t) => (g.rank - t - 1 + p) % p);
    const peer = (r: number, segment: Segment) => ({ core: g.members[r], segment });
    if (passes.reduce) {
      const sends = to.map((r) => peer(r, blocks[r]));
      const receives = from.map((r) => peer(r, mine));
      yield* directExchange(x, "podsim:direct-rs", data, sends, data, receives, true);
    }
    if (passes.gather) {
      const sends = to.map((r) => peer(r, mine));
      const receives = from.map((r) => peer(r, blocks[r]));
      yield* directExchange(x, "podsim:direct-ag", data, sends, data, receives, false);
    }
  }
  return finish();
}

/**
 * Two counter-rotating rings over the same members: the forward ring carries the first half of
 * every segment, the backward ring the second half.
 */
function bidirectional(members: readonly number[], segments: Segment[], tag: string): Ring[] {
  const halves = segments.map((s) => splitHalves(s));
  return [
    { members, segments: halves.map(([a]) => a), tag: `${tag}+` },
    {
      members: [...members].reverse(),
      segments: halves.map(([, b]) => b).reverse(),
      tag: `${tag}-`,
    },
  ];
}

/** Each range of a segment cut in two: [first halves, second halves]. */
function splitHalves(s: Segment): [Segment, Segment] {
  const a: number[] = [];
  const b: number[] = [];
  const r = s.ranges;
  for (let i = 0; i < r.length; i += 2) {
    const mid = r[i] + Math.ceil((r[i + 1] - r[i]) / 2);
    a.push(r[i], mid);
    b.push(mid, r[i + 1]);
  }
  return [segment(a), segment(b)];
}

/**
 * The rings of one torus phase on this core's line. Before the phase along an axis, the line's
 * members are still responsible for the blocks whose owners share their coordinates on the
 * axes already done; the phase splits those blocks by their owner's coordinate on its axis, so
 * afterwards each member keeps the blocks of owners that share its coordinate. A line that
 * wraps (more than two members) runs as two counter-rotating rings; a folded line or a core
 * pair as one ring. Built once per line and shared by its members.
 */
function torusRings(g: GroupView, n: number, phase: number, axis: GridAxis): readonly Ring[] {
  const line = g.grid!.lines[axis]![g.rank];
  return memo(g, `torus:${phase}:${line.members[0]}`, () => {
    const p = g.members.length;
    // Ranks still in play on this line: those matching it on the axes already done.
    const head = g.rankOf[line.members[0]];
    const matching = memo(g, `torus-done:${phase}`, () => byDoneAxes(g, phase)).get(
      doneKey(g, phase, head),
    )!;
    const owners = new Map<number, number[]>(); // by coordinate on this axis, ranks ascending
    for (const r of matching) {
      const value = g.axisOf[axis][r];
      const list = owners.get(value);
      if (list) list.push(r);
      else owners.set(value, [r]);
    }
    const segments = line.members.map((id) =>
      merged(owners.get(g.axisOf[axis][g.rankOf[id]]) ?? [], n, p)
    );
    const tag = `podsim:torus-${axis}`;
    return line.wraps && line.members.length > 2
      ? bidirectional(line.members, segments, tag)
      : [{ members: line.members, segments, tag }];
  });
}

/** A number naming rank r's coordinates on the axes done before `phase`. */
function doneKey(g: GroupView, phase: number, r: number): number {
  let key = 0;
  for (const axis of g.grid!.axes.slice(0, phase)) key = key * 65536 + g.axisOf[axis][r];
  return key;
}

/** Ranks (ascending) by their coordinates on the axes done before `phase`. */
function byDoneAxes(g: GroupView, phase: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (let r = 0; r < g.members.length; r++) {
    const key = doneKey(g, phase, r);
    const list = out.get(key);
    if (list) list.push(r);
    else out.set(key, [r]);
  }
  return out;
}

/** The blocks of some ranks (ascending) as one segment, adjacent blocks merged. */
function merged(ranks: readonly number[], n: number, p: number): Segment {
  const out: number[] = [];
  for (const r of ranks) {
    const start = blockStart(n, p, r);
    const end = blockStart(n, p, r + 1);
    if (out.length > 0 && out[out.length - 1] === start) out[out.length - 1] = end;
    else out.push(start, end);
  }
  return segment(out);
}
