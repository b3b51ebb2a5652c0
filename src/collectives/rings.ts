/**
 * The two building blocks of every collective: rings (reduce-scatter and all-gather passes,
 * pipelined in chunks, several rings side by side) and direct pairwise exchanges. Both move
 * segments of a buffer through {@linkcode pack} / {@linkcode unpack}, so numeric and
 * shape-only runs take the same steps, send the same bytes and spend the same simulated time.
 *
 * @module
 */

import type { ComputeRequest, CoreHandle, Message, ProgramGenerator } from "../actors/program.ts";
import { chunkStart, pack, type Segment, unpack } from "./segments.ts";
import type { Reduction } from "./spec.ts";

/** What one core's part of a collective works with. */
export interface Exchange {
  /** The core running it. */
  readonly core: CoreHandle;
  /** Bytes per element on the wire. */
  readonly bytesPerElement: number;
  /** Reduction of reduce passes. */
  readonly reduction: Reduction;
  /** Pieces each segment is sent in. */
  readonly chunks: number;
  /** Compute label of reductions, e.g. "all-reduce: sum". */
  readonly reduceLabel: string;
}

/** One ring of a pass: its members in ring order and the segment of each position. */
export interface Ring {
  /** Core ids; each sends to the next, the last to the first. */
  readonly members: readonly number[];
  /** Segment owned by (reduce-scatter) or held by (all-gather) each position. */
  readonly segments: readonly Segment[];
  /** Message tag of this ring. */
  readonly tag: string;
}

/** The compute of combining `n` received elements: read both operands, write the result. */
function reduceCost(x: Exchange, n: number): ComputeRequest {
  const f32 = x.bytesPerElement === 4;
  return {
    flops: n,
    bytes: 3 * n * x.bytesPerElement,
    dtype: f32 ? "f32" : "bf16",
    label: x.reduceLabel,
  };
}

/** One pass: rings that run side by side, reducing (reduce-scatter) or copying (all-gather). */
export interface Pass {
  /** The rings, each over its own members. */
  readonly rings: readonly Ring[];
  /** Reduce-scatter (true) or all-gather (false). */
  readonly reduce: boolean;
  /**
   * Take every ring's chunk of a step before passing any on, and reduce them in one kernel
   * (half the compute operations). Right for rings whose steps cost the same (a torus line's two
   * directions); rings with uneven steps (on-chip and ICI steps mixed) must not wait for each
   * other, so each ring forwards its chunk as soon as it is reduced.
   */
  readonly lockstep: boolean;
}

/**
 * Ring passes, one after another; in each, every ring at once. Reduce-scatter: after q - 1
 * steps position i holds segment i reduced over its ring. All-gather: position i starts with
 * segment i and ends with all of them. Each received chunk is combined and forwarded at once
 * (the chunks of all rings of a step in one reduction), so with several chunks a ring's links
 * stay busy while its cores reduce.
 *
 * This loop runs hundreds of thousands of operations on a pod, so it yields each operation
 * directly (`yield op`, the runtime's answer is the value of the `yield`) instead of through
 * helper generators or `yield*`: every delegation level costs time on every operation.
 */
export function* ringPasses<R>(
  x: Exchange,
  data: Float32Array | undefined,
  passes: readonly Pass[],
  finish: () => R,
): ProgramGenerator<R> {
  const { core, chunks: K, bytesPerElement: bpe } = x;
  for (const { rings, reduce, lockstep } of passes) {
    const at = rings.map((ring) => {
      const q = ring.members.length;
      const pos = ring.members.indexOf(core.id);
      return {
        ring,
        q,
        pos,
        next: ring.members[(pos + 1) % q],
        prev: ring.members[(pos + q - 1) % q],
      };
    });
    // Reduce-scatter sends segment i - 1 first and ends owning segment i; all-gather starts
    // from its own segment.
    const first = reduce ? 1 : 0;
    let steps = 0;
    for (const { ring, q, pos, next } of at) {
      if (q < 2) continue;
      steps = Math.max(steps, q - 1);
      const seg = ring.segments[(pos - first + q) % q];
      for (let k = 0; k < K; k++) {
        const from = chunkStart(seg.length, K, k);
        const to = chunkStart(seg.length, K, k + 1);
        if (to === from) continue; // empty pieces are not sent (both ends know the lengths)
        const bytes = (to - from) * bpe;
        yield core.send(next, pack(data, seg, from, to), { tag: ring.tag, bytes });
      }
    }
    for (let s = 0; s < steps; s++) {
      for (let k = 0; k < K; k++) {
        if (!lockstep) {
          // Each ring on its own: receive, reduce, pass on.
          for (const { ring, q, pos, next, prev } of at) {
            if (s >= q - 1) continue;
            const seg = ring.segments[(((pos - first - s - 1) % q) + q) % q];
            const from = chunkStart(seg.length, K, k);
            const to = chunkStart(seg.length, K, k + 1);
            if (to === from) continue;
            const msg = (yield core.recv(prev, ring.tag)) as Message<Float32Array | undefined>;
            unpack(data, seg, from, to, msg.payload, reduce ? x.reduction : undefined);
            if (reduce) yield core.compute(reduceCost(x, to - from));
            if (s >= q - 2) continue;
            const bytes = (to - from) * bpe;
            yield core.send(next, pack(data, seg, from, to), { tag: ring.tag, bytes });
          }
          continue;
        }
        // Take this step's chunk from every ring, reduce them in one kernel, pass them on.
        let received = 0;
        for (const { ring, q, pos, prev } of at) {
          if (s >= q - 1) continue;
          const seg = ring.segments[(((pos - first - s - 1) % q) + q) % q];
          const from = chunkStart(seg.length, K, k);
          const to = chunkStart(seg.length, K, k + 1);
          if (to === from) continue;
          const msg = (yield core.recv(prev, ring.tag)) as Message<Float32Array | undefined>;
          unpack(data, seg, from, to, msg.payload, reduce ? x.reduction : undefined);
          received += to - from;
        }
        if (reduce && received > 0) yield core.compute(reduceCost(x, received));
        if (s === steps - 1) continue;
        for (const { ring, q, pos, next } of at) {
          if (s >= q - 2) continue;
          const seg = ring.segments[(((pos - first - s - 1) % q) + q) % q];
          const from = chunkStart(seg.length, K, k);
          const to = chunkStart(seg.length, K, k + 1);
          if (to === from) continue;
          const bytes = (to - from) * bpe;
          yield core.send(next, pack(data, seg, from, to), { tag: ring.tag, bytes });
        }
      }
    }
  }
  return finish();
}

/** One peer of a direct exchange: what goes to it, or what comes from it. */
export interface Peer {
  /** The other core. */
  readonly core: number;
  /** The segment sent to it, or the segment its data lands in. */
  readonly segment: Segment;
}

/**
 * Posts every send, then takes every receive: `sends` read from `source`, `receives` land in
 * `target` (combined with the reduction when `reduce`). Receives are taken in the order given;
 * each message is cut into the exchange's chunks.
 */
export function* directExchange(
  x: Exchange,
  tag: string,
  source: Float32Array | undefined,
  sends: readonly Peer[],
  target: Float32Array | undefined,
  receives: readonly Peer[],
  reduce: boolean,
): ProgramGenerator {
  const { core, chunks: K, bytesPerElement: bpe } = x;
  for (const { core: to, segment: seg } of sends) {
    for (let k = 0; k < K; k++) {
      const from = chunkStart(seg.length, K, k);
      const end = chunkStart(seg.length, K, k + 1);
      if (end === from) continue;
      yield* core.send(to, pack(source, seg, from, end), { tag, bytes: (end - from) * bpe });
    }
  }
  for (const { core: peer, segment: seg } of receives) {
    for (let k = 0; k < K; k++) {
      const from = chunkStart(seg.length, K, k);
      const to = chunkStart(seg.length, K, k + 1);
      if (to === from) continue;
      const msg = yield* core.recv<Float32Array | undefined>(peer, tag);
      unpack(target, seg, from, to, msg.payload, reduce ? x.reduction : undefined);
      if (reduce) yield* core.compute(reduceCost(x, to - from));
    }
  }
}
