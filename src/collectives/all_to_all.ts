/**
 * AllToAll: rank r's input splits into p blocks (numpy.array_split), block d goes to rank d;
 * the output is the blocks rank r received, in the senders' rank order. Algorithms:
 * - direct: every pair exchanges its block over the routed interconnect;
 * - ring / bidirectional-ring: blocks are relayed hop by hop around the ring (one or both ways),
 *   each core keeping its own block from every bundle that passes;
 * - torus: one phase per grid axis (the core pair, chip x, chip y); in each phase a core sends
 *   each line member every block it holds whose destination shares that member's coordinate.
 *
 * @module
 */

import type { Message, ProgramGenerator } from "../actors/program.ts";
import { type GroupView, memo } from "./groups.ts";
import { directExchange, type Exchange } from "./rings.ts";
import { block, blockLength, blockStart, pack, segment } from "./segments.ts";
import type { CollectiveAlgorithm } from "./spec.ts";

/** Runs an AllToAll; returns the output (undefined in shape-only mode). */
export function* allToAll(
  x: Exchange,
  algorithm: CollectiveAlgorithm,
  g: GroupView,
  input: Float32Array | undefined,
  n: number,
): ProgramGenerator<Float32Array | undefined> {
  const p = g.members.length;
  const mine = blockLength(n, p, g.rank);
  const output = input && new Float32Array(p * mine);
  output?.set(
    input!.subarray(blockStart(n, p, g.rank), blockStart(n, p, g.rank + 1)),
    g.rank * mine,
  );
  if (p < 2) return output;
  switch (algorithm) {
    case "direct": {
      const sends = [];
      const receives = [];
      for (let t = 1; t < p; t++) {
        const to = g.members[(g.rank + t) % p];
        sends.push({ core: to, segment: block(n, p, g.rankOf[to]) });
        const from = (g.rank - t + p) % p;
        receives.push({
          core: g.members[from],
          segment: segment([from * mine, (from + 1) * mine]),
        });
      }
      yield* directExchange(x, "podsim:a2a", input, sends, output, receives, false);
      return output;
    }
    case "ring":
      yield* relay(x, g, input, output, n, [{ ring: g.ring, reach: p - 1, tag: "podsim:a2a+" }]);
      return output;
    case "bidirectional-ring": {
      const reversed = [...g.ring].reverse();
      yield* relay(x, g, input, output, n, [
        { ring: g.ring, reach: Math.ceil((p - 1) / 2), tag: "podsim:a2a+" },
        { ring: reversed, reach: Math.floor((p - 1) / 2), tag: "podsim:a2a-" },
      ]);
      return output;
    }
    case "torus":
      yield* torusPhases(x, g, input, output, n);
      return output;
  }
}

interface Relay {
  /** Members in the direction of travel. */
  readonly ring: readonly number[];
  /** How many positions ahead this direction delivers (1..reach). */
  readonly reach: number;
  readonly tag: string;
}

/**
 * Ring relay: each core sends one bundle holding its blocks for the `reach` positions ahead;
 * every core takes the first block of each bundle it receives (its own) and forwards the rest.
 */
function* relay(
  x: Exchange,
  g: GroupView,
  input: Float32Array | undefined,
  output: Float32Array | undefined,
  n: number,
  directions: readonly Relay[],
): ProgramGenerator {
  const p = g.members.length;
  const me = x.core.id;
  const mine = blockLength(n, p, g.rank);
  const states = directions.filter((d) => d.reach > 0).map((d) => {
    const q = d.ring.length;
    const pos = d.ring.indexOf(me);
    // Elements of the blocks for positions pos+1 .. pos+reach, in that order.
    const ranges: number[] = [];
    for (let k = 1; k <= d.reach; k++) {
      ranges.push(...block(n, p, g.rankOf[d.ring[(pos + k) % q]]).ranges);
    }
    return { ...d, q, pos, ahead: segment(ranges) };
  });
  for (const s of states) {
    yield* x.core.send(s.ring[(s.pos + 1) % s.q], pack(input, s.ahead, 0, s.ahead.length), {
      tag: s.tag,
      bytes: s.ahead.length * x.bytesPerElement,
    });
  }
  const steps = Math.max(0, ...states.map((s) => s.reach));
  for (let step = 0; step < steps; step++) {
    for (const s of states) {
      if (step >= s.reach) continue;
      const prev = s.ring[(s.pos - 1 + s.q) % s.q];
      const origin = g.rankOf[s.ring[(s.pos - 1 - step + 2 * s.q) % s.q]];
      const msg = yield* x.core.recv<Float32Array | undefined>(prev, s.tag);
      output?.set(msg.payload!.subarray(0, mine), origin * mine);
      if (step + 1 < s.reach) {
        const rest = msg.bytes - mine * x.bytesPerElement;
        yield* x.core.send(s.ring[(s.pos + 1) % s.q], msg.payload?.subarray(mine), {
          tag: s.tag,
          bytes: rest,
        });
      }
    }
  }
}

/**
 * The torus AllToAll. A core holds blocks (origin, destination): at first its own input's
 * blocks for every destination; each phase sends away the destinations that differ on the
 * phase's axis and takes in, from its line, the blocks for destinations that match it; at the
 * end it holds the block for itself from every origin. Message sizes follow from counts alone;
 * which block is which is tracked only when there is data to move.
 */
function* torusPhases(
  x: Exchange,
  g: GroupView,
  input: Float32Array | undefined,
  output: Float32Array | undefined,
  n: number,
): ProgramGenerator {
  const p = g.members.length;
  const { topology } = g;
  let originCount = 1;
  let destinations = memo(g, "a2a-keep:", () => {
    const all = new Int32Array(p);
    for (let d = 0; d < p; d++) all[d] = d;
    return all;
  });
  // Numeric mode only: the origins held (ascending) and each block's data, by origin * p + dest.
  let origins = [g.rank];
  let held = new Map<number, Float32Array>();
  if (input) {
    for (let d = 0; d < p; d++) {
      held.set(g.rank * p + d, input.subarray(blockStart(n, p, d), blockStart(n, p, d + 1)));
    }
  }
  // What a phase's sends hold depends only on the coordinates done so far, which many cores
  // share: worked out once per group (an O(p) pass per core would be O(p^2) per collective).
  let done = "";
  for (const axis of g.grid!.axes) {
    const of = g.axisOf[axis];
    const line = g.grid!.lines[axis]![g.rank].members;
    const q = line.length;
    const pos = line.indexOf(x.core.id);
    const mine = of[g.rank];
    const kept = destinations;
    const elementsByValue = memo(g, `a2a:${n}:${done}${axis}`, () => {
      const sums = new Float64Array(
        Math.max(topology.chipsX, topology.chipsY, topology.coresPerChip),
      );
      for (const d of kept) sums[of[d]] += blockLength(n, p, d);
      return sums;
    });
    done += `${axis}=${mine},`;
    const tag = `podsim:a2a-${axis}`;
    for (let t = 1; t < q; t++) {
      const to = line[(pos + t) % q];
      const value = of[g.rankOf[to]];
      const elements = originCount * elementsByValue[value];
      let payload: Float32Array | undefined;
      if (input) {
        payload = new Float32Array(elements);
        let at = 0;
        for (const d of destinations) {
          if (of[d] !== value) continue;
          for (const o of origins) {
            const data = held.get(o * p + d)!;
            payload.set(data, at);
            at += data.length;
          }
        }
      }
      yield x.core.send(to, payload, { tag, bytes: elements * x.bytesPerElement });
    }
    const keep = memo(g, `a2a-keep:${done}`, () => kept.filter((d) => of[d] === mine));
    const next = new Map<number, Float32Array>();
    const gathered = [...origins];
    if (input) {
      for (const d of keep) for (const o of origins) next.set(o * p + d, held.get(o * p + d)!);
    }
    for (let t = 1; t < q; t++) {
      const from = line[(pos - t + q) % q];
      // Operations yielded directly, as in ringPasses: this loop runs 63 times per core of a pod.
      const msg = (yield x.core.recv(from, tag)) as Message<Float32Array | undefined>;
      if (!input) continue;
      // The sender's origins: ours, moved to its coordinate on this axis.
      const value = of[g.rankOf[from]];
      const theirs = origins.map((o) =>
        g.rankOf[topology.coreId({ ...topology.coreCoord(g.members[o]), [axis]: value })]
      ).sort((a, b) => a - b);
      gathered.push(...theirs);
      let at = 0;
      for (const d of keep) {
        const length = blockLength(n, p, d);
        for (const o of theirs) {
          next.set(o * p + d, msg.payload!.subarray(at, at + length));
          at += length;
        }
      }
    }
    originCount *= q;
    origins = gathered.sort((a, b) => a - b);
    destinations = keep;
    held = next;
  }
  if (output) {
    const mine = blockLength(n, p, g.rank);
    for (let o = 0; o < p; o++) output.set(held.get(o * p + g.rank)!, o * mine);
  }
}
