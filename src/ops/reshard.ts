/**
 * Moving a tensor from one sharding to another with collectives, on every core: a local slice
 * where the new tiles lie inside the old ones, an AllToAll where one split dim trades places
 * with another over the same devices (the MoE dispatch), and otherwise AllGathers of the split
 * dims followed by a local slice. Planned once (the same steps on every core, as SPMD needs),
 * run per core on data or on shapes only.
 *
 * @module
 */

import type { CoreHandle, ProgramGenerator } from "../actors/program.ts";
import { type CollectivePlan, planCollective } from "../collectives/plan.ts";
import type { Topology } from "../topology/topology.ts";
import { extract, insert, permute } from "./ndarray.ts";
import { BYTES_PER_ELEMENT, type DType, type Shape, sizeOf } from "./shape.ts";
import type { Sharding } from "./sharding.ts";

/**
 * Groups of at most this many cores get the "direct" algorithm from the partitioner (every pair
 * at once: latency-bound collectives on a tray finish soonest); larger groups get the plan's
 * default, dimension-ordered torus phases on grids and rings otherwise, whose messages per core
 * grow with the grid's sides rather than with the group.
 */
export const DIRECT_GROUP_LIMIT = 8;

/**
 * AllToAlls go direct in larger groups, up to this many cores: TPU interconnects route an
 * AllToAll's pairs directly, and on a mesh without wraparound (v3-128) the torus phases take
 * about 1.6x as long as direct routing (16 MiB per core: 1.59 vs 1.02 ms simulated), while on
 * v3-512 they are within 3% (3.20 vs 3.13 ms). Beyond, direct is too many messages to simulate
 * quickly (4.2M per AllToAll on v3-2048, against 129k for the torus phases).
 */
export const DIRECT_ALL_TO_ALL_LIMIT = 128;

/** The algorithm the partitioner plans a collective of `kind` with, for groups `groups`. */
export function partitionerAlgorithm(
  groups: readonly (readonly number[])[],
  kind: "all-reduce" | "all-gather" | "all-to-all" = "all-reduce",
): "direct" | undefined {
  const limit = kind === "all-to-all" ? DIRECT_ALL_TO_ALL_LIMIT : DIRECT_GROUP_LIMIT;
  return groups.every((g) => g.length <= limit) ? "direct" : undefined;
}

/** One step of a reshard. */
export type ReshardStep =
  | { readonly kind: "slice"; readonly from: Sharding; readonly to: Sharding }
  | {
    readonly kind: "all-gather";
    readonly dim: number;
    readonly from: Sharding;
    readonly to: Sharding;
    readonly plan: CollectivePlan;
  }
  | {
    readonly kind: "all-to-all";
    readonly from: Sharding;
    readonly to: Sharding;
    readonly splitDim: number; // split before, whole after
    readonly concatDim: number; // whole before, split after
    readonly plan: CollectivePlan;
  };

/** A collective a plan inserts, for reports: its kind and the bytes each core sends into it. */
export interface InsertedCollective {
  /** "all-reduce", "all-gather", "all-to-all", ... */
  readonly kind: string;
  /** Bytes per core in the collective-notes convention. */
  readonly bytes: number;
  /** Participants per group. */
  readonly groupSize: number;
  /** Why it is there. */
  readonly why: string;
}

/** Whether every device's new box lies inside its old box (a local slice suffices). */
function sliceSuffices(shape: Shape, from: Sharding, to: Sharding): boolean {
  for (let device = 0; device < from.devices; device++) {
    const a = from.box(shape, device);
    const b = to.box(shape, device);
    for (let d = 0; d < shape.length; d++) {
      if (b.size[d] === 0) continue;
      if (b.start[d] < a.start[d] || b.start[d] + b.size[d] > a.start[d] + a.size[d]) return false;
    }
  }
  return true;
}

/** The steps from `from` to `to` for a tensor of `shape`. */
export function planReshard(
  topology: Topology,
  shape: Shape,
  dtype: DType,
  from: Sharding,
  to: Sharding,
): ReshardStep[] {
  if (from.key === to.key) return [];
  if (sliceSuffices(shape, from, to)) return [{ kind: "slice", from, to }];
  // AllToAll: exactly one dim split before and whole after, one whole before and split after,
  // into the same number of tiles, with each device's tile coordinate carried across.
  const lost = from.shardedDims.filter((d) => to.tiles[d] !== from.tiles[d]);
  const gained = to.shardedDims.filter((d) => to.tiles[d] !== from.tiles[d]);
  if (lost.length === 1 && gained.length === 1) {
    const [a, b] = [lost[0], gained[0]];
    if (to.tiles[a] === 1 && from.tiles[b] === 1 && from.tiles[a] === to.tiles[b]) {
      const ca = from.coordsAlong(a);
      const cb = to.coordsAlong(b);
      const others = (s: Sharding, device: number) =>
        s.coords(device).filter((_, d) => d !== a && d !== b).join(",");
      let same = true;
      for (let device = 0; device < from.devices && same; device++) {
        same = ca[device] === cb[device] && others(from, device) === others(to, device);
      }
      if (same) {
        const local = from.localShape(shape);
        const n = from.tiles[a];
        const length = sizeOf(local) / local[b] * Math.ceil(shape[b] / n) * n;
        const plan = planCollective(topology, {
          kind: "all-to-all",
          length,
          group: from.groupsAlong([a]),
          dtype,
          algorithm: partitionerAlgorithm(from.groupsAlong([a]), "all-to-all"),
        });
        return [{ kind: "all-to-all", from, to, splitDim: a, concatDim: b, plan }];
      }
    }
  }
  // Otherwise gather every dim `to` splits differently, one at a time, then slice.
  const steps: ReshardStep[] = [];
  let current = from;
  const gather = (d: number) => {
    const next = current.without([d]);
    const plan = planCollective(topology, {
      kind: "all-gather",
      length: sizeOf(current.localShape(shape)) * current.tiles[d],
      group: current.groupsAlong([d]),
      dtype,
      algorithm: partitionerAlgorithm(current.groupsAlong([d]), "all-gather"),
    });
    steps.push({ kind: "all-gather", dim: d, from: current, to: next, plan });
    current = next;
  };
  const kept = (d: number) => {
    if (to.tiles[d] !== current.tiles[d]) return false;
    const [x, y] = [current.coordsAlong(d), to.coordsAlong(d)];
    return x.every((v, i) => v === y[i]);
  };
  for (const d of from.shardedDims) if (!kept(d)) gather(d);
  if (!sliceSuffices(shape, current, to)) { for (const d of current.shardedDims) gather(d); }
  if (current.key !== to.key) steps.push({ kind: "slice", from: current, to });
  return steps;
}

/** The collectives of a reshard, for reports. */
export function reshardCollectives(
  steps: readonly ReshardStep[],
  dtype: DType,
  why: string,
): InsertedCollective[] {
  return steps.flatMap((s) =>
    s.kind === "slice" ? [] : [{
      kind: s.kind,
      bytes: s.plan.length * BYTES_PER_ELEMENT[dtype],
      groupSize: s.plan.groups[0].length,
      why,
    }]
  );
}

/**
 * Runs a planned reshard on one core: `x` is the core's padded tile under the first step's
 * sharding (undefined in shape-only mode); returns its padded tile under the last.
 */
export function* runReshard(
  core: CoreHandle,
  steps: readonly ReshardStep[],
  shape: Shape,
  dtype: DType,
  x: Float32Array | undefined,
): ProgramGenerator<Float32Array | undefined> {
  for (const step of steps) {
    const local = step.from.localShape(shape);
    const next = step.to.localShape(shape);
    if (step.kind === "slice") {
      x = x && reslice(x, shape, step.from, step.to, core.id);
      yield* copyCost(core, sizeOf(next), dtype, "reshard: slice");
    } else if (step.kind === "all-gather") {
      const d = step.dim;
      const front = [d, ...local.keys()].filter((v, i) => i === 0 || v !== d);
      const moved = x && permute(x, local, front);
      yield* copyCost(core, sizeOf(local), dtype, "reshard: transpose");
      const gathered = yield* core.call(step.plan.run(core, moved));
      // [n * local[d], others...] -> dim d back in place, cropped to the whole dim.
      const n = step.from.tiles[d];
      const stacked = [n * local[d], ...front.slice(1).map((i) => local[i])];
      const back = front.map((_, i) => front.indexOf(i));
      const wide = gathered && permute(gathered, stacked, back);
      const wideShape = back.map((i) => stacked[i]);
      x = wide && extract(wide, wideShape, wideShape.map(() => 0), next);
      yield* copyCost(core, 2 * sizeOf(next), dtype, "reshard: transpose");
    } else {
      x = yield* allToAllReshard(core, step, shape, dtype, local, next, x);
    }
  }
  return x;
}

/** Re-tiles a core's data where its new tile lies inside its old one. */
function reslice(
  x: Float32Array,
  shape: Shape,
  from: Sharding,
  to: Sharding,
  device: number,
): Float32Array {
  const a = from.box(shape, device);
  const b = to.box(shape, device);
  const local = from.localShape(shape);
  const valid = extract(x, local, b.start.map((s, d) => s - a.start[d]), b.size);
  const out = new Float32Array(sizeOf(to.localShape(shape)));
  insert(out, to.localShape(shape), valid, b.size.map(() => 0), b.size);
  return out;
}

/**
 * AllToAll: split dim a (n tiles) becomes whole, whole dim b becomes split in n. The core pads
 * b to n chunks, sends chunk j to the group's rank j, and stacks what it receives along a.
 */
function* allToAllReshard(
  core: CoreHandle,
  step: Extract<ReshardStep, { kind: "all-to-all" }>,
  shape: Shape,
  dtype: DType,
  local: readonly number[],
  next: readonly number[],
  x: Float32Array | undefined,
): ProgramGenerator<Float32Array | undefined> {
  const { splitDim: a, concatDim: b } = step;
  const n = step.from.tiles[a];
  const chunk = Math.ceil(shape[b] / n);
  // Pad b to n * chunk, view it as [n, chunk] and bring the chunk index to the front.
  const padded = local.map((s, d) => (d === b ? n * chunk : s));
  let data = x;
  if (data && padded[b] !== local[b]) {
    const out = new Float32Array(sizeOf(padded));
    insert(out, padded, data, local.map(() => 0), local);
    data = out;
  }
  const split = [...padded.slice(0, b), n, chunk, ...padded.slice(b + 1)];
  const front = [b, ...split.keys()].filter((v, i) => i === 0 || v !== b);
  const moved = data && permute(data, split, front);
  yield* copyCost(core, sizeOf(split), dtype, "reshard: transpose");
  const received = yield* core.call(step.plan.run(core, moved));
  // Received: [n senders (their coordinate along a), ...split without the chunk dim].
  const rest = split.filter((_, i) => i !== b);
  const recvShape = [n, ...rest];
  // `rest` keeps the original dim order (dim b is now `chunk` long): move the sender axis in
  // front of dim a and merge the two into one dim of n * local[a].
  const ai = a;
  const order = [...Array(rest.length).keys()].flatMap((i) => (i === ai ? [0, i + 1] : [i + 1]));
  const merged = received && permute(received, recvShape, order);
  const mergedShape = rest.map((s, i) => (i === ai ? n * s : s));
  yield* copyCost(core, sizeOf(recvShape), dtype, "reshard: transpose");
  // Drop the chunk-split view of b (it is `chunk` long now) and crop a to its whole size.
  const outShape = mergedShape;
  return merged && extract(merged, outShape, outShape.map(() => 0), next);
}

/** Charges a core the HBM traffic of a local copy or transpose of `elements`. */
function* copyCost(
  core: CoreHandle,
  elements: number,
  dtype: DType,
  label: string,
): ProgramGenerator {
  yield* core.compute({ bytes: 2 * elements * BYTES_PER_ELEMENT[dtype], label });
}
