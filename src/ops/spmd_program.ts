/**
 * The SPMD program of a partitioned graph: every core runs every step on its tiles, in graph
 * order, allocating each tile in its ledger and freeing it after its last use. Options make it a
 * training step: parameters resident from the start, gradients charged as gradients, some
 * AllReduces of partial results left to the caller (who combines them), and rematerialisation:
 * forward activations dropped after their last forward use and recomputed, op by op, when the
 * backward pass needs them.
 *
 * @module
 */

import type { ComputeRequest, CoreHandle, Program, ProgramGenerator } from "../actors/program.ts";
import type { MemoryCategory } from "../actors/memory_ledger.ts";
import { OptionsError, ShapeError } from "../errors.ts";
import { costOf, type Feeds, type Node, type SourceAttrs, valueOf } from "./graph.ts";
import { extract, insert } from "./ndarray.ts";
import type { PartitionStep, PermuteLoop } from "./partition.ts";
import { runReshard } from "./reshard.ts";
import { BYTES_PER_ELEMENT, sizeOf } from "./shape.ts";
import type { Sharding } from "./sharding.ts";

const SOURCES = new Set(["input", "param", "constant"]);

/** Forward activations to drop after their last forward use and recompute in the backward pass. */
export interface RematPlan {
  /** The nodes to recompute (local ops only: no collective is run twice). */
  readonly recompute: ReadonlySet<Node>;
  /** Index of the first backward step: uses from here on find the node recomputed. */
  readonly backwardFrom: number;
}

/** What the program does besides running the steps. */
export interface ProgramOptions {
  /** Data of the inputs and parameters: numeric mode. Omit for shape-only. */
  readonly feeds?: Feeds;
  /** Receives each core's padded tile of the kept nodes at the end. */
  readonly sink?: (core: number, node: Node, tile: Float32Array) => void;
  /**
   * Each step's simulated seconds on each core, and how much of it was the step's own compute
   * (the rest is its collectives).
   */
  readonly timing?: (core: number, node: Node, seconds: number, computeSeconds: number) => void;
  /** Each recomputation's simulated seconds on each core. */
  readonly recomputeTiming?: (core: number, node: Node, seconds: number) => void;
  /** Nodes whose step leaves its AllReduce of partial results to `finish`. */
  readonly deferReduce?: ReadonlySet<Node>;
  /** Nodes charged to the ledger as gradients (not activations). */
  readonly gradients?: ReadonlySet<Node>;
  /** Rematerialisation. */
  readonly remat?: RematPlan;
  /**
   * A training step's ends: parameters are allocated (and tiled) before the first step and kept;
   * `start` runs first, `run` last with every tile still held of `keep`.
   */
  readonly finish?: {
    readonly keep: readonly Node[];
    readonly start?: (core: CoreHandle) => ProgramGenerator;
    readonly run: (
      core: CoreHandle,
      tiles: Map<Node, Float32Array | undefined>,
    ) => ProgramGenerator;
  };
}

/** The ledger category of a node's tile. */
function categoryOf(node: Node, sharding: Sharding, gradients?: ReadonlySet<Node>): MemoryCategory {
  if ((node.attrs as Partial<SourceAttrs> | null)?.source === "param") {
    return sharding.isReplicated ? "weights" : "sharded weights";
  }
  return gradients?.has(node) ? "gradients" : "activations";
}

/** What the program does when, worked out once for all cores (SPMD: it is the same on each). */
interface Schedule {
  readonly lastUse: ReadonlyMap<Node, number>;
  readonly freeAt: ReadonlyMap<Node, number>;
  readonly freeList: ReadonlyMap<number, readonly Node[]>;
  readonly dropAfter: ReadonlyMap<number, readonly Node[]>;
  readonly keep: ReadonlySet<Node>;
  readonly resident: readonly PartitionStep[];
  readonly order: readonly number[];
  readonly bytes: readonly number[];
  readonly categories: readonly MemoryCategory[];
  readonly computeOnly: readonly (ComputeRequest | null | undefined)[];
  readonly deferred: ReadonlySet<Node>;
}

function scheduleOf(
  steps: readonly PartitionStep[],
  needed: ReadonlySet<Node>,
  outputs: readonly Node[],
  options: ProgramOptions,
): Schedule {
  const { feeds, finish, remat, gradients } = options;
  const deferred = options.deferReduce ?? new Set<Node>();
  const lastUse = new Map<Node, number>();
  const lastForwardUse = new Map<Node, number>();
  steps.forEach((s, i) => {
    if (!needed.has(s.node)) return;
    for (const x of s.node.inputs) {
      lastUse.set(x, i);
      if (remat && i < remat.backwardFrom) lastForwardUse.set(x, i);
    }
  });
  const keep = new Set([...outputs, ...(finish?.keep ?? [])]);
  const bytesOf = (x: Node) =>
    sizeOf(steps[x.id].output.localShape(x.shape)) * BYTES_PER_ELEMENT[x.dtype];
  const category = (x: Node) => categoryOf(x, steps[x.id].output, gradients);
  // When each tile is freed: after its last use, or later when a recomputation needs it.
  const freeAt = new Map(lastUse);
  // Remat: a node is dropped after its last forward use when the backward pass uses it again;
  // what recomputing it needs that is not itself recomputed is held until its last use.
  const dropAfter = new Map<number, Node[]>();
  const recomputable = (x: Node) =>
    remat !== undefined && remat.recompute.has(x) && needed.has(x) && !SOURCES.has(x.op.kind) &&
    !keep.has(x);
  for (const x of remat?.recompute ?? []) {
    const f = lastForwardUse.get(x);
    const l = lastUse.get(x);
    if (!recomputable(x) || f === undefined || l === undefined || l < remat!.backwardFrom) continue;
    const list = dropAfter.get(f);
    if (list) list.push(x);
    else dropAfter.set(f, [x]);
    const seen = new Set<Node>();
    const hold = (y: Node) => {
      if (seen.has(y)) return;
      seen.add(y);
      if (recomputable(y)) y.inputs.forEach(hold);
      else freeAt.set(y, Math.max(freeAt.get(y) ?? -1, l));
    };
    x.inputs.forEach(hold);
  }
  const freeList = new Map<number, Node[]>();
  for (const [x, i] of freeAt) {
    if (keep.has(x)) continue;
    const list = freeList.get(i);
    if (list) list.push(x);
    else freeList.set(i, [x]);
  }
  // In a training step the parameters are resident from the start.
  const resident = finish
    ? steps.filter((s) =>
      needed.has(s.node) && (s.node.attrs as Partial<SourceAttrs> | null)?.source === "param"
    )
    : [];
  const residentSet = new Set(resident.map((s) => s.node));
  const order = steps.flatMap((
    s,
    i,
  ) => (needed.has(s.node) && !residentSet.has(s.node) ? [i] : []));
  // Per step, the same on every core: tile bytes, ledger category, and whether in shape-only
  // mode the step is only its compute (no collective, no retiling).
  const bytes = steps.map((s) => (needed.has(s.node) ? bytesOf(s.node) : 0));
  const categories = steps.map((s) => category(s.node));
  const computeOnly = steps.map((s) => {
    if (feeds !== undefined || !needed.has(s.node)) return undefined;
    const { node } = s;
    if (node.op.kind === "input") return null; // nothing to do
    if (SOURCES.has(node.op.kind) || s.loop || s.after.length > 0) return undefined;
    if (s.reshards.some((r) => r.length > 0) || s.reused?.some(Boolean)) return undefined;
    if (s.reduce && !deferred.has(node)) return undefined;
    const { flops, bytes: hbm } = localCost(s);
    return { flops, bytes: hbm, dtype: node.dtype, label: node.op.kind };
  });
  return {
    lastUse,
    freeAt,
    freeList,
    dropAfter,
    keep,
    resident,
    order,
    bytes,
    categories,
    computeOnly,
    deferred,
  };
}

/**
 * The peak of one core's ledger the schedule implies, before running it: resident parameters,
 * `extraBytes` (optimizer state), and the tiles live at once (retiled temporaries and
 * recomputation are left out). Used to choose a rematerialisation policy; the run itself keeps
 * the real ledger.
 */
export function estimatePeakBytes(
  steps: readonly PartitionStep[],
  needed: ReadonlySet<Node>,
  outputs: readonly Node[],
  options: ProgramOptions,
  extraBytes = 0,
): number {
  const s = scheduleOf(steps, needed, outputs, options);
  let live = extraBytes;
  for (const step of s.resident) live += s.bytes[step.node.id];
  const held = new Set<Node>();
  let peak = live;
  for (const i of s.order) {
    live += s.bytes[i];
    held.add(steps[i].node);
    peak = Math.max(peak, live);
    for (const list of [s.freeList.get(i), s.dropAfter.get(i)]) {
      for (const x of list ?? []) {
        if (!held.has(x)) continue;
        held.delete(x);
        live -= s.bytes[x.id];
      }
    }
  }
  return peak;
}

/**
 * The program of `steps` (one per graph node, in order) restricted to `needed`, keeping
 * `outputs` to the end.
 */
export function buildProgram(
  steps: readonly PartitionStep[],
  needed: ReadonlySet<Node>,
  outputs: readonly Node[],
  options: ProgramOptions,
): Program {
  const { feeds, sink, timing, recomputeTiming, finish, remat } = options;
  if (feeds !== undefined) {
    checkFeeds(
      steps.map((s) => s.node).filter((n) => needed.has(n)),
      feeds,
      steps.map((s) => s.node),
    );
  }
  // The keys under which a node's retiled tiles may be kept for reuse.
  const keptKeys = new Map<Node, string[]>();
  for (const step of steps) {
    step.node.inputs.forEach((x, j) => {
      if (!step.kept?.[j]) return;
      const list = keptKeys.get(x) ?? [];
      list.push(`${x.id}|${step.operands[j].key}`);
      keptKeys.set(x, list);
    });
  }
  const {
    lastUse,
    freeAt,
    freeList,
    dropAfter,
    keep,
    resident,
    order,
    bytes,
    categories,
    computeOnly,
    deferred,
  } = scheduleOf(steps, needed, outputs, options);
  // Operations are yielded directly (`yield op`), not through `yield*`: this loop runs once
  // per node per core, millions of times on a pod, and every delegation level costs.
  return function* spmdCore(core: CoreHandle): ProgramGenerator {
    const tiles = new Map<Node, Float32Array | undefined>();
    const retiled = new Map<string, { tile: Float32Array | undefined; bytes: number }>();
    const clock: ComputeClock = { compute: 0 };
    if (finish?.start) yield* finish.start(core);
    for (const step of resident) {
      const { node } = step;
      yield core.alloc(bytes[node.id], categories[node.id], node.name);
      tiles.set(node, yield* core.call(runStep(core, step, tiles, feeds, retiled, false, clock)));
    }
    let recomputed: Node[] = [];
    // Recomputes x (and whatever of its inputs was dropped too) from what is held.
    const recompute = function* (x: Node): ProgramGenerator {
      for (const y of x.inputs) if (!tiles.has(y)) yield* recompute(y);
      yield core.alloc(bytes[x.id], categories[x.id], `${x.name} recomputed`);
      const start = core.now();
      tiles.set(
        x,
        yield* core.call(
          runStep(core, steps[x.id], tiles, feeds, retiled, deferred.has(x), clock),
        ),
      );
      recomputeTiming?.(core.id, x, core.now() - start);
      recomputed.push(x);
    };
    for (const i of order) {
      const step = steps[i];
      const { node } = step;
      if (remat && i >= remat.backwardFrom) {
        for (const x of node.inputs) if (!tiles.has(x)) yield* recompute(x);
      }
      yield core.alloc(bytes[i], categories[i], node.name);
      const start = core.now();
      clock.compute = 0;
      const fast = computeOnly[i];
      if (fast === null) tiles.set(node, undefined);
      else if (fast !== undefined) {
        clock.compute = (yield core.compute(fast)) as number;
        tiles.set(node, undefined);
      } else {
        tiles.set(
          node,
          // A call, not yield*: the step's operations (a collective's hundreds) go straight to
          // the runtime instead of through every generator of the chain.
          yield* core.call(runStep(core, step, tiles, feeds, retiled, deferred.has(node), clock)),
        );
      }
      timing?.(core.id, node, core.now() - start, clock.compute);
      // Retiled tiles this step used for the last time.
      if (step.release !== undefined) {
        for (const [j, x] of node.inputs.entries()) {
          if (!step.release[j]) continue;
          const key = `${x.id}|${step.operands[j].key}`;
          const held = retiled.get(key);
          if (held === undefined) continue;
          yield core.free(held.bytes, "temporaries", `${x.name} retiled`);
          retiled.delete(key);
        }
      }
      if (retiled.size > 0) {
        for (const x of node.inputs) {
          if (lastUse.get(x) !== i) continue;
          // Its retiled copies kept for reuse go with it.
          for (const key of keptKeys.get(x) ?? []) {
            const held = retiled.get(key);
            if (held === undefined) continue;
            yield core.free(held.bytes, "temporaries", `${x.name} retiled`);
            retiled.delete(key);
          }
        }
      }
      const dead = freeList.get(i);
      if (dead !== undefined) {
        for (const x of dead) {
          if (!tiles.has(x)) continue;
          yield core.free(bytes[x.id], categories[x.id], x.name);
          tiles.delete(x);
        }
      }
      const dropped = dropAfter.get(i);
      if (dropped !== undefined) {
        for (const x of dropped) {
          if (!tiles.has(x)) continue;
          yield core.free(bytes[x.id], categories[x.id], x.name);
          tiles.delete(x);
        }
      }
      // Recomputed only to recompute others: gone again.
      if (recomputed.length > 0) {
        for (const x of recomputed) {
          if ((freeAt.get(x) ?? -1) >= i || !tiles.has(x) || keep.has(x)) continue;
          yield core.free(bytes[x.id], categories[x.id], x.name);
          tiles.delete(x);
        }
        recomputed = [];
      }
    }
    if (finish) yield* finish.run(core, tiles);
    if (sink) { for (const node of keep) sink(core.id, node, tiles.get(node)!); }
  };
}

/** Every input and parameter fed, with its size; no feed for a name the graph lacks. */
export function checkFeeds(nodes: readonly Node[], feeds: Feeds, all: readonly Node[]): void {
  const sourcesIn = (list: readonly Node[]) => {
    const sources = new Map<string, Node>();
    for (const node of list) {
      const source = (node.attrs as Partial<SourceAttrs> | null)?.source;
      if (source === "input" || source === "param") sources.set(node.name, node);
    }
    return sources;
  };
  const sources = sourcesIn(nodes); // those that run must be fed
  const known = sourcesIn(all); // any of the graph's may be
  for (const name of Object.keys(feeds)) {
    if (!known.has(name)) {
      throw new OptionsError(
        `feeds: the graph has no input or parameter "${name}" (it has ${
          [...known.keys()].join(", ")
        })`,
      );
    }
  }
  for (const [name, node] of sources) {
    const fed = feeds[name];
    if (!(fed instanceof Float32Array) || fed.length !== node.size) {
      throw new ShapeError(
        `feeds: ${node} needs a Float32Array of ${node.size} elements, got ` +
          (fed === undefined ? "none" : `${(fed as { length?: number }).length} elements`),
      );
    }
  }
}

/** The whole tensor from the devices' padded tiles (the first device holding each tile). */
export function assemble(
  node: Node,
  sharding: Sharding,
  tiles: readonly (Float32Array | undefined)[],
): Float32Array {
  const out = new Float32Array(node.size);
  const local = sharding.localShape(node.shape);
  const done = new Set<number>();
  tiles.forEach((tile, device) => {
    const t = sharding.tileOf[device];
    if (tile === undefined || done.has(t)) return;
    done.add(t);
    const { start, size } = sharding.box(node.shape, device);
    insert(out, node.shape, extract(tile, local, size.map(() => 0), size), start, size);
  });
  return out;
}

/** Simulated seconds a core spent in its steps' own compute (not in their collectives). */
interface ComputeClock {
  compute: number;
}

/** Runs one step on one core; returns the node's padded tile (undefined in shape-only mode). */
function* runStep(
  core: CoreHandle,
  step: PartitionStep,
  tiles: ReadonlyMap<Node, Float32Array | undefined>,
  feeds: Feeds | undefined,
  retiled: Map<string, { tile: Float32Array | undefined; bytes: number }>,
  deferReduce: boolean,
  clock: ComputeClock,
): ProgramGenerator<Float32Array | undefined> {
  const { node } = step;
  const device = core.id;
  if (SOURCES.has(node.op.kind)) {
    if (feeds === undefined && node.op.kind !== "constant") return undefined;
    const whole = valueOf(node, feeds ?? {}, []);
    const { start, size } = step.output.box(node.shape, device);
    const tile = new Float32Array(sizeOf(step.output.localShape(node.shape)));
    insert(
      tile,
      step.output.localShape(node.shape),
      extract(whole, node.shape, start, size),
      size.map(() => 0),
      size,
    );
    return feeds === undefined ? undefined : tile;
  }
  // Bring the operands to their planned tilings; a retiled operand is a temporary of the op,
  // or of every step that reuses it.
  const operands: (Float32Array | undefined)[] = [];
  let temporaries = 0;
  for (const [i, x] of node.inputs.entries()) {
    const key = `${x.id}|${step.operands[i].key}`;
    if (step.reused?.[i]) {
      operands.push(retiled.get(key)!.tile);
      continue;
    }
    if (step.reshards[i].length === 0) {
      operands.push(tiles.get(x));
      continue;
    }
    // The largest tile the operand passes through (a gather before a slice holds it whole).
    const elements = Math.max(...step.reshards[i].map((r) => sizeOf(r.to.localShape(x.shape))));
    const bytes = elements * BYTES_PER_ELEMENT[x.dtype];
    yield* core.alloc(bytes, "temporaries", `${x.name} retiled`);
    const tile = yield* core.call(
      runReshard(core, step.reshards[i], x.shape, x.dtype, tiles.get(x)),
    );
    operands.push(tile);
    if (step.kept?.[i]) {
      const kept = sizeOf(step.operands[i].localShape(x.shape)) * BYTES_PER_ELEMENT[x.dtype];
      retiled.set(key, { tile, bytes: kept });
      temporaries += bytes - kept;
    } else temporaries += bytes;
  }
  const out = yield* runLocal(core, step, operands, feeds, deferReduce, clock);
  if (temporaries > 0) yield* core.free(temporaries, "temporaries", `${node.name} operands`);
  return out;
}

/** The padded tile shape and cost of a step's local op: the same on every core, so kept. */
const localCosts = new WeakMap<
  PartitionStep,
  { outLocal: number[]; flops: number; bytes: number }
>();
function localCost(step: PartitionStep): { outLocal: number[]; flops: number; bytes: number } {
  let cost = localCosts.get(step);
  if (cost === undefined) {
    const { node } = step;
    const outLocal = step.local.localShape(node.shape);
    const padded = node.inputs.map((x, i) => step.operands[i].localShape(x.shape));
    cost = { outLocal, ...costOf(node, padded, outLocal) };
    localCosts.set(step, cost);
  }
  return cost;
}

/** The local op on the operands' tiles, then any AllReduce and reshard of the result. */
function* runLocal(
  core: CoreHandle,
  step: PartitionStep,
  operands: (Float32Array | undefined)[],
  feeds: Feeds | undefined,
  deferReduce: boolean,
  clock: ComputeClock,
): ProgramGenerator<Float32Array | undefined> {
  const { node } = step;
  const device = core.id;
  if (step.loop) {
    return yield* runLoop(core, step, step.loop, operands, feeds !== undefined, clock);
  }
  // The local op on the valid boxes.
  const { outLocal, flops, bytes } = localCost(step);
  let out: Float32Array | undefined;
  if (operands.every((o) => o !== undefined) && feeds !== undefined) {
    const validShapes = node.inputs.map((x, i) => step.operands[i].box(x.shape, device).size);
    const outBox = step.local.box(node.shape, device).size;
    // A tile with no padding is its valid box: ops never modify their inputs, so pass it as is.
    const valid = node.inputs.map((x, i) => {
      const local = step.operands[i].localShape(x.shape);
      return local.every((n, d) => n === validShapes[i][d])
        ? operands[i]!
        : extract(operands[i]!, local, validShapes[i].map(() => 0), validShapes[i]);
    });
    const result = node.op.run(valid, validShapes, outBox, localAttrs(node, step, device));
    if (step.scaleBy === "mean") {
      const axes = (node.attrs as { axes: number[] }).axes;
      const box = step.operands[0].box(node.inputs[0].shape, device).size;
      const whole = axes.reduce((n, d) => n * node.inputs[0].shape[d], 1);
      const mine = axes.reduce((n, d) => n * box[d], 1);
      // An empty box's mean is 0/0: its share of the whole is nothing.
      for (let i = 0; i < result.length; i++) {
        result[i] = mine === 0 ? 0 : result[i] * (mine / whole);
      }
    }
    if (outLocal.every((n, d) => n === outBox[d])) out = result;
    else {
      out = new Float32Array(sizeOf(outLocal));
      insert(out, outLocal, result, outBox.map(() => 0), outBox);
    }
  }
  clock.compute += yield* core.compute({ flops, bytes, dtype: node.dtype, label: node.op.kind });
  // A deferred AllReduce leaves the tile a partial sum: the caller reduces it, combined.
  if (step.reduce && !deferReduce) out = yield* core.call(step.reduce.run(core, out));
  if (step.after.length === 0) return out;
  return yield* core.call(runReshard(core, step.after, node.shape, node.dtype, out));
}

/** The op's attributes for one core's tile: dropout's mask window is where the tile sits. */
function localAttrs(node: Node, step: PartitionStep, device: number): unknown {
  const attrs = node.attrs as { groupOffset?: unknown } | null;
  if (typeof attrs?.groupOffset === "number") {
    const first = step.operands[0].box(node.inputs[0].shape, device).start[0];
    return { ...attrs, groupOffset: attrs.groupOffset + first };
  }
  if (node.op.kind !== "dropout") return node.attrs;
  const begin = step.local.box(node.shape, device).start;
  return { ...(node.attrs as object), window: { fullShape: node.shape, begin } };
}

/**
 * The CollectivePermute loop: at step k the core holds the travelling operand's tile
 * (c + k) mod n, computes the output block it gives, and passes the tile one place back.
 */
function* runLoop(
  core: CoreHandle,
  step: PartitionStep,
  loop: PermuteLoop,
  operands: (Float32Array | undefined)[],
  numeric: boolean,
  clock: ComputeClock,
): ProgramGenerator<Float32Array | undefined> {
  const { node } = step;
  const device = core.id;
  const R = node.inputs[loop.operand];
  const rs = step.operands[loop.operand];
  const rLocal = rs.localShape(R.shape);
  const tileLength = rLocal[loop.dim];
  const outLocal = step.local.localShape(node.shape);
  const outBox = step.local.box(node.shape, device).size;
  const out = numeric ? new Float32Array(sizeOf(outLocal)) : undefined;
  const start = rs.coords(device)[loop.dim];
  const shapes = node.inputs.map((x, i) => step.operands[i].box(x.shape, device).size);
  const padded = node.inputs.map((x, i) => step.operands[i].localShape(x.shape));
  let travelling = operands[loop.operand];
  // The tile arriving while the one in hand is still being used.
  const tileBytes = sizeOf(rLocal) * BYTES_PER_ELEMENT[R.dtype];
  yield* core.alloc(tileBytes, "buffers", `${R.name} next tile`);
  for (let k = 0; k < loop.n; k++) {
    const t = (start + k) % loop.n;
    const length = Math.max(0, Math.min(tileLength, R.shape[loop.dim] - t * tileLength));
    const blockShapes = shapes.map((s, i) =>
      i === loop.operand ? s.map((v, d) => (d === loop.dim ? length : v)) : s
    );
    const block = outBox.map((v, d) => (d === loop.outDim ? length : v));
    if (out && travelling) {
      const valid = node.inputs.map((_, i) => {
        const data = i === loop.operand ? travelling! : operands[i]!;
        return extract(data, padded[i], blockShapes[i].map(() => 0), blockShapes[i]);
      });
      const result = node.op.run(valid, blockShapes, block, node.attrs);
      insert(
        out,
        outLocal,
        result,
        block.map((_, d) => (d === loop.outDim ? t * tileLength : 0)),
        block,
      );
    }
    const blockPadded = outLocal.map((v, d) => (d === loop.outDim ? tileLength : v));
    const { flops, bytes } = costOf(node, padded, blockPadded);
    clock.compute += yield* core.compute({
      flops,
      bytes,
      dtype: node.dtype,
      label: `${node.op.kind} block`,
    });
    if (k < loop.n - 1) travelling = yield* loop.permute.run(core, travelling);
  }
  yield* core.free(tileBytes, "buffers", `${R.name} next tile`);
  return yield* runReshard(core, step.after, node.shape, node.dtype, out);
}
