/**
 * Replica groups: which cores take part together, each core's rank, and the shapes the
 * algorithms need -- a ring order that follows physical links, and for grids of chips the
 * lines (core pair, x, y) that the torus algorithms run their phases on.
 *
 * @module
 */

import { OptionsError } from "../errors.ts";
import { show } from "./show.ts";
import type { Topology } from "../topology/topology.ts";
import type { GroupSpec } from "./spec.ts";

/** One dimension of a group's grid: the two cores of a chip, chip x or chip y. */
export type GridAxis = "core" | "x" | "y";

/** A line of a grid: the members that differ only along one axis, in ring order. */
export interface Line {
  /** The axis the line runs along. */
  readonly axis: GridAxis;
  /** Core ids in ring order (each sends to the next, the last to the first). */
  readonly members: readonly number[];
  /** Whether the ring closes over a physical wraparound (else it is folded over a line). */
  readonly wraps: boolean;
}

/** A group that fills a grid of (core, x, y) coordinates. */
export interface Grid {
  /** Axes with more than one value, in phase order: core, then x, then y. */
  readonly axes: readonly GridAxis[];
  /** Each member's line along each axis: `lines[axis][rank]`. */
  readonly lines: Readonly<Partial<Record<GridAxis, readonly Line[]>>>;
}

/** Resolved, validated replica groups of one topology. */
export interface ReplicaGroups {
  /** Groups of core ids in rank order. */
  readonly groups: readonly (readonly number[])[];
  /** Group index of each core id, or -1. */
  readonly groupOf: Int32Array;
  /** Rank of each core id in its group, or -1. */
  readonly rankOf: Int32Array;
  /** Each group's members in an order whose neighbours are physically close. */
  readonly ringOrders: readonly (readonly number[])[];
  /** Each group's grid, or undefined when it is not a full grid of coordinates. */
  readonly grids: readonly (Grid | undefined)[];
  /** Text every participant must agree on. */
  readonly key: string;
}

/** Resolves and validates a group spec; errors name the offending entry. */
export function resolveGroups(topology: Topology, spec: GroupSpec | undefined): ReplicaGroups {
  const groups = groupLists(topology, spec ?? "all");
  const groupOf = new Int32Array(topology.coreCount).fill(-1);
  const rankOf = new Int32Array(topology.coreCount).fill(-1);
  groups.forEach((group, g) => {
    group.forEach((id, rank) => {
      if (!Number.isInteger(id) || id < 0 || id >= topology.coreCount) {
        throw new OptionsError(
          `group[${g}][${rank}]: core ${show(id)} does not exist in ${topology.name} ` +
            `(cores 0..${topology.coreCount - 1})`,
        );
      }
      if (groupOf[id] >= 0) {
        throw new OptionsError(
          `core ${id} appears twice in the replica groups ` +
            `(group[${groupOf[id]}][${rankOf[id]}] and group[${g}][${rank}])`,
        );
      }
      groupOf[id] = g;
      rankOf[id] = rank;
    });
  });
  const grids = groups.map((group) => gridOf(topology, group));
  const ringOrders = groups.map((group, g) => grids[g] ? gridRing(topology, group) : group);
  const key = groups.map((group) => group.join(",")).join(";");
  return { groups, groupOf, rankOf, ringOrders, grids, key };
}

function groupLists(topology: Topology, spec: GroupSpec): number[][] {
  const ids = (keep: (x: number, y: number) => boolean) => {
    const out: number[] = [];
    for (let id = 0; id < topology.coreCount; id++) {
      const { x, y } = topology.coreCoord(id);
      if (keep(x, y)) out.push(id);
    }
    return out;
  };
  if (spec === "all") return [ids(() => true)];
  if (spec === "rows") {
    return Array.from({ length: topology.chipsY }, (_, row) => ids((_x, y) => y === row));
  }
  if (spec === "columns") {
    return Array.from({ length: topology.chipsX }, (_, col) => ids((x) => x === col));
  }
  if (!Array.isArray(spec)) {
    throw new OptionsError(
      `group must be "all", "rows", "columns", a list of core ids or a list of such lists, ` +
        `got ${show(spec)}`,
    );
  }
  if (spec.length === 0) throw new OptionsError("group is empty: a replica group needs a core");
  const nested = spec.every(Array.isArray);
  if (!nested && spec.some(Array.isArray)) {
    throw new OptionsError("group mixes core ids and lists; give one list or a list of lists");
  }
  const lists = nested ? (spec as readonly (readonly number[])[]) : [spec as readonly number[]];
  lists.forEach((group, g) => {
    if (group.length === 0) throw new OptionsError(`group[${g}] is empty`);
  });
  return lists.map((group) => [...group]);
}

/** The group's grid, when its members are exactly every (core, x, y) of some value sets. */
function gridOf(topology: Topology, group: readonly number[]): Grid | undefined {
  const coords = group.map((id) => topology.coreCoord(id));
  const values = (axis: GridAxis) => [...new Set(coords.map((c) => c[axis]))].sort((a, b) => a - b);
  const sets = { core: values("core"), x: values("x"), y: values("y") };
  if (sets.core.length * sets.x.length * sets.y.length !== group.length) return undefined;
  const axes = (["core", "x", "y"] as const).filter((a) => sets[a].length > 1);
  const lines: Partial<Record<GridAxis, Line[]>> = {};
  for (const axis of axes) {
    const dimension = axis === "x" ? topology.chipsX : axis === "y" ? topology.chipsY : 0;
    const full = sets[axis].length === dimension;
    const wraps = axis !== "core" && full && topology.wrap[axis === "x" ? 0 : 1] &&
      dimension > 2;
    lines[axis] = coords.map((c) => {
      const members = sets[axis].map((v) => topology.coreId({ ...c, [axis]: v }));
      return { axis, members: wraps || members.length <= 2 ? members : fold(members), wraps };
    });
  }
  return { axes, lines };
}

/**
 * A ring over a line without wraparound: out along the even positions and back along the odd
 * ones, so every step is at most two hops and no link is used twice in one direction.
 */
export function fold<T>(line: readonly T[]): T[] {
  const out = line.filter((_, i) => i % 2 === 0);
  for (let i = line.length - 1; i >= 1; i--) if (i % 2 === 1) out.push(line[i]);
  return out;
}

/**
 * A cycle through a grid group's chips in which consecutive chips are neighbours, the cores of
 * a chip adjacent: a Hamiltonian cycle of the chip grid when one side is even (out along the
 * first row, snake back through the others, home along the first column), a folded or wrapped
 * line for one row, and a plain snake when both sides are odd.
 */
function gridRing(topology: Topology, group: readonly number[]): number[] {
  const coords = group.map((id) => topology.coreCoord(id));
  const xs = [...new Set(coords.map((c) => c.x))].sort((a, b) => a - b);
  const ys = [...new Set(coords.map((c) => c.y))].sort((a, b) => a - b);
  const cores = [...new Set(coords.map((c) => c.core))].sort((a, b) => a - b);
  const wrapX = topology.wrap[0] && xs.length === topology.chipsX && xs.length > 2;
  const wrapY = topology.wrap[1] && ys.length === topology.chipsY && ys.length > 2;
  let chips: [number, number][];
  if (ys.length === 1) chips = (wrapX ? xs : fold(xs)).map((x) => [x, ys[0]]);
  else if (xs.length === 1) chips = (wrapY ? ys : fold(ys)).map((y) => [xs[0], y]);
  else if (ys.length % 2 === 0) chips = evenCycle(xs, ys, false);
  else if (xs.length % 2 === 0) chips = evenCycle(ys, xs, true);
  else {
    chips = ys.flatMap((y, j) =>
      (j % 2 === 0 ? xs : [...xs].reverse()).map((x): [number, number] => [x, y])
    );
  }
  return chips.flatMap(([x, y]) => cores.map((core) => topology.coreId({ x, y, core })));
}

/** Hamiltonian cycle of an a x b grid with b even, as [x, y] (swapped when `transpose`). */
function evenCycle(as: number[], bs: number[], transpose: boolean): [number, number][] {
  const out: [number, number][] = as.map((a) => [a, bs[0]]);
  for (let j = 1; j < bs.length; j++) {
    const row = as.slice(1);
    for (const a of j % 2 === 1 ? row.reverse() : row) out.push([a, bs[j]]);
  }
  for (let j = bs.length - 1; j >= 1; j--) out.push([as[0], bs[j]]);
  return transpose ? out.map(([a, b]) => [b, a]) : out;
}

/** A group as the protocols use it, built once per plan. */
export interface GroupLayout {
  /** The topology. */
  readonly topology: Topology;
  /** Core ids in rank order. */
  readonly members: readonly number[];
  /** Members in ring order. */
  readonly ring: readonly number[];
  /** The group's grid, if it is one. */
  readonly grid: Grid | undefined;
  /** Rank of each core id (-1 outside the group). */
  readonly rankOf: Int32Array;
  /** Each rank's coordinate along each axis. */
  readonly axisOf: Readonly<Record<GridAxis, Int32Array>>;
  /** Memo for what the protocols derive from the layout (per-line rings, ...). */
  readonly memo: Map<string, unknown>;
}

/** One core's view of its group while it runs a collective. */
export interface GroupView extends GroupLayout {
  /** This core's rank. */
  readonly rank: number;
}

/** What protocols derive from a group's layout, made once per group and kept in its memo. */
export function memo<T>(g: GroupLayout, key: string, make: () => T): T {
  let value = g.memo.get(key) as T | undefined;
  if (value === undefined) g.memo.set(key, value = make());
  return value;
}

/** The layout of each resolved group. */
export function groupLayouts(topology: Topology, groups: ReplicaGroups): GroupLayout[] {
  return groups.groups.map((members, g) => {
    const coords = members.map((id) => topology.coreCoord(id));
    const axisOf = {
      core: Int32Array.from(coords, (c) => c.core),
      x: Int32Array.from(coords, (c) => c.x),
      y: Int32Array.from(coords, (c) => c.y),
    };
    return {
      topology,
      members,
      ring: groups.ringOrders[g],
      grid: groups.grids[g],
      rankOf: groups.rankOf,
      axisOf,
      memo: new Map(),
    };
  });
}
