import assert from "node:assert/strict";
import {
  createTopology,
  type LinkDirection,
  meshTopology,
  parseShape,
  ringTopology,
  sliceTopology,
  type Topology,
  TopologyError,
  torusTopology,
  TPU_V3,
  TPU_V3_SLICES,
} from "../mod.ts";
import { fc } from "./_deps.ts";
import { test } from "./_test.ts";

/** Asserts `fn` throws a TopologyError whose message contains every one of `parts`. */
function throwsTopologyError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TopologyError, `expected a TopologyError, got ${e}`);
    for (const part of parts) {
      assert.ok(e.message.includes(part), `message "${e.message}" should mention "${part}"`);
    }
    return true;
  });
}

/** The directions of the links a route crosses. */
function directions(t: Topology, from: number, to: number): LinkDirection[] {
  return t.route(from, to).map((id) => t.link(id).direction);
}

/** ICI link directions a mesh (no wrap) of X x Y chips has: 2 per adjacent pair. */
function meshIciLinks(x: number, y: number): number {
  return 2 * (x - 1) * y + 2 * x * (y - 1);
}

// --- Shapes --------------------------------------------------------------------------------

test("v3-2048 is a 32x32 torus of chips with 2 cores each", () => {
  const pod = sliceTopology("v3-2048");
  assert.equal(pod.name, "v3-2048");
  assert.equal(pod.chipsX, 32);
  assert.equal(pod.chipsY, 32);
  assert.equal(pod.coresPerChip, 2);
  assert.equal(pod.chipCount, 1024);
  assert.equal(pod.coreCount, 2048);
  assert.deepEqual(pod.wrap, [true, true]);
  // Wraparound: the first and last chip of a row or column are one hop apart.
  const last = pod.coreId({ x: 31, y: 0, core: 0 });
  assert.equal(pod.hopCount(0, last), 1);
  assert.deepEqual(directions(pod, 0, last), ["-x"]);
  const bottom = pod.coreId({ x: 0, y: 31, core: 0 });
  assert.equal(pod.hopCount(0, bottom), 1);
  assert.deepEqual(directions(pod, 0, bottom), ["-y"]);
  // The farthest chip on a 32x32 torus is 16 + 16 hops away.
  assert.equal(pod.hopCount(0, pod.coreId({ x: 16, y: 16, core: 1 })), 32);
});

test("v3-8 is a 2x2 mesh of chips with 8 cores and no wraparound", () => {
  const t = sliceTopology("v3-8");
  assert.equal(t.chipsX, 2);
  assert.equal(t.chipsY, 2);
  assert.equal(t.chipCount, 4);
  assert.equal(t.coreCount, 8);
  assert.deepEqual(t.wrap, [false, false]);
  assert.deepEqual(t.coreCoord(7), { x: 1, y: 1, core: 1 });
  // Without wraparound there is no "-x" link out of column 0 nor "-y" out of row 0.
  for (let id = 0; id < t.linkCount; id++) {
    const link = t.link(id);
    if (link.fromChip === 0) assert.ok(link.direction !== "-x" && link.direction !== "-y");
  }
});

test("v3-32, v3-128 and v3-512 are 4x4, 8x8 and 16x16 meshes of 2-core chips", () => {
  for (const [name, side] of [["v3-32", 4], ["v3-128", 8], ["v3-512", 16]] as const) {
    const t = sliceTopology(name);
    assert.equal(t.name, name);
    assert.equal(t.chipsX, side, name);
    assert.equal(t.chipsY, side, name);
    assert.equal(t.coresPerChip, 2, name);
    assert.equal(t.coreCount, side * side * 2, name);
    assert.deepEqual(t.wrap, [false, false], name);
    // Corner to corner crosses the whole mesh: (side-1) hops each way.
    assert.equal(t.hopCount(0, t.coreCount - 1), 2 * (side - 1), name);
  }
});

test("every name in TPU_V3_SLICES builds a slice whose core count is in its name", () => {
  const names = Object.keys(TPU_V3_SLICES);
  assert.deepEqual(names, ["v3-8", "v3-32", "v3-128", "v3-512", "v3-2048"]);
  for (const name of names) {
    const [x, y, wrap] = TPU_V3_SLICES[name as keyof typeof TPU_V3_SLICES];
    const t = sliceTopology(name);
    assert.equal(t.name, name);
    assert.equal(t.coreCount, Number(name.slice(3)), name);
    assert.equal(t.chipsX, x, name);
    assert.equal(t.chipsY, y, name);
    assert.deepEqual(t.wrap, [wrap, wrap], name);
  }
});

// --- Ids and coordinates -------------------------------------------------------------------

function assertRoundTrip(t: Topology): void {
  const seen = new Set<string>();
  for (let id = 0; id < t.coreCount; id++) {
    const coord = t.coreCoord(id);
    assert.ok(coord.x >= 0 && coord.x < t.chipsX, `x of ${id}`);
    assert.ok(coord.y >= 0 && coord.y < t.chipsY, `y of ${id}`);
    assert.ok(coord.core >= 0 && coord.core < t.coresPerChip, `core of ${id}`);
    assert.equal(t.coreId(coord), id);
    assert.equal(t.chipOf(id), coord.y * t.chipsX + coord.x);
    assert.equal(id, (coord.y * t.chipsX + coord.x) * t.coresPerChip + coord.core);
    seen.add(`${coord.x},${coord.y},${coord.core}`);
  }
  assert.equal(seen.size, t.coreCount, "every core has its own coordinate");
}

test("core ids and coordinates round-trip for every core of v3-128", () => {
  const t = sliceTopology("v3-128");
  assertRoundTrip(t);
  assert.deepEqual(t.coreCoord(0), { x: 0, y: 0, core: 0 });
  assert.deepEqual(t.coreCoord(17), { x: 0, y: 1, core: 1 });
  assert.deepEqual(t.coreCoord(127), { x: 7, y: 7, core: 1 });
});

test("core ids and coordinates round-trip on a 3x5 chip grid wrapped along x only", () => {
  const t = createTopology({ chips: [3, 5], wrap: [true, false] });
  assert.equal(t.coreCount, 30);
  assert.deepEqual(t.wrap, [true, false]);
  assertRoundTrip(t);
  assert.deepEqual(t.coreCoord(7), { x: 0, y: 1, core: 1 });
  assert.deepEqual(t.coreCoord(29), { x: 2, y: 4, core: 1 });
});

test("the two cores of a chip have consecutive ids", () => {
  for (const t of [sliceTopology("v3-8"), sliceTopology("v3-128")]) {
    for (let chip = 0; chip < t.chipCount; chip++) {
      const x = chip % t.chipsX;
      const y = Math.floor(chip / t.chipsX);
      const a = t.coreId({ x, y, core: 0 });
      const b = t.coreId({ x, y, core: 1 });
      assert.equal(b, a + 1);
      assert.equal(a, 2 * chip);
      assert.equal(t.chipOf(a), chip);
      assert.equal(t.chipOf(b), chip);
    }
  }
});

test("the v3-8 physical ring order 0,1,2,3,6,7,4,5 steps between neighbours only", () => {
  const t = sliceTopology("v3-8");
  const ring = [0, 1, 2, 3, 6, 7, 4, 5];
  const kinds: string[] = [];
  for (let i = 0; i < ring.length; i++) {
    const a = ring[i];
    const b = ring[(i + 1) % ring.length];
    assert.equal(t.hopCount(a, b), 1, `${a} -> ${b}`);
    assert.equal(t.hopCount(b, a), 1, `${b} -> ${a}`);
    kinds.push(t.link(t.route(a, b)[0]).kind);
  }
  // It alternates between the on-chip path and an ICI hop.
  assert.deepEqual(kinds, ["on-chip", "ici", "on-chip", "ici", "on-chip", "ici", "on-chip", "ici"]);
  // Id order is not such a ring: core 3 (chip (1,0)) to core 4 (chip (0,1)) is 2 hops.
  assert.equal(t.hopCount(3, 4), 2);
});

// --- Routes --------------------------------------------------------------------------------

test("v3-8 hop counts are 1 on a chip, 1 to a neighbour chip and 2 to the diagonal chip", () => {
  const t = sliceTopology("v3-8");
  assert.equal(t.hopCount(0, 0), 0);
  assert.deepEqual(t.route(5, 5), []);
  assert.equal(t.hopCount(0, 1), 1);
  assert.equal(t.hopCount(1, 0), 1);
  assert.deepEqual(directions(t, 0, 1), ["on-chip"]);
  assert.equal(t.hopCount(0, 2), 1); // (0,0) -> (1,0)
  assert.equal(t.hopCount(1, 3), 1);
  assert.equal(t.hopCount(0, 4), 1); // (0,0) -> (0,1)
  assert.equal(t.hopCount(0, 6), 2); // (0,0) -> (1,1)
  assert.equal(t.hopCount(1, 7), 2);
  assert.equal(t.hopCount(2, 4), 2); // (1,0) -> (0,1)
});

test("routes are dimension-ordered: x first, then y", () => {
  const v3_8 = sliceTopology("v3-8");
  assert.deepEqual(directions(v3_8, 0, 6), ["+x", "+y"]);
  assert.deepEqual(directions(v3_8, 6, 0), ["-x", "-y"]);
  assert.deepEqual(directions(v3_8, 2, 4), ["-x", "+y"]);
  assert.deepEqual(directions(v3_8, 4, 2), ["+x", "-y"]);
  // The path of 0 -> 6 goes through chip (1,0), not chip (0,1).
  const [first, second] = v3_8.route(0, 6).map((id) => v3_8.link(id));
  assert.equal(first.fromChip, 0);
  assert.equal(first.toChip, 1);
  assert.equal(second.fromChip, 1);
  assert.equal(second.toChip, 3);

  const t = sliceTopology("v3-128");
  const from = t.coreId({ x: 1, y: 6, core: 0 });
  const to = t.coreId({ x: 4, y: 2, core: 1 });
  assert.deepEqual(directions(t, from, to), ["+x", "+x", "+x", "-y", "-y", "-y", "-y"]);
});

test("on a torus, routes take the shorter way around and ties go the + way", () => {
  const ring = ringTopology(8);
  assert.equal(ring.hopCount(0, 7), 1);
  assert.deepEqual(directions(ring, 0, 7), ["-x"]);
  assert.deepEqual(directions(ring, 7, 0), ["+x"]);
  assert.deepEqual(directions(ring, 0, 3), ["+x", "+x", "+x"]);
  assert.deepEqual(directions(ring, 0, 5), ["-x", "-x", "-x"]);
  // 4 is half way round a ring of 8: a tie, which goes +.
  assert.deepEqual(directions(ring, 0, 4), ["+x", "+x", "+x", "+x"]);
  assert.deepEqual(directions(ring, 6, 2), ["+x", "+x", "+x", "+x"]);
  // The last link of 6 -> 2 wraps from node 7 to node 0... and on to 1, then 2.
  assert.deepEqual(ring.route(6, 2).map((id) => ring.link(id).toChip), [7, 0, 1, 2]);

  const torus = torusTopology(4, 6);
  assert.deepEqual(directions(torus, 0, torus.coreId({ x: 3, y: 5, core: 0 })), ["-x", "-y"]);
  assert.deepEqual(directions(torus, 0, torus.coreId({ x: 2, y: 3, core: 0 })), [
    "+x",
    "+x",
    "+y",
    "+y",
    "+y",
  ]);
});

test("on a mesh without wraparound the last column has no +x link", () => {
  const t = createTopology({ chips: [8, 1], wrap: [false, false], coresPerChip: 1 });
  assert.equal(t.hopCount(0, 7), 7);
  assert.deepEqual(directions(t, 0, 7), Array(7).fill("+x"));
  assert.deepEqual(directions(t, 7, 0), Array(7).fill("-x"));
  const outOfLast = [];
  for (let id = 0; id < t.linkCount; id++) {
    const link = t.link(id);
    if (link.fromChip === 7) outOfLast.push(link.direction);
    if (link.fromChip === 0) assert.notEqual(link.direction, "-x");
  }
  assert.deepEqual(outOfLast, ["-x"]);
  assert.equal(t.linkCount, 14);
});

// --- Links ---------------------------------------------------------------------------------

test("ICI links carry the hardware's ICI figures and on-chip links the on-chip figures", () => {
  const t = sliceTopology("v3-8");
  let ici = 0;
  let onChip = 0;
  for (let id = 0; id < t.linkCount; id++) {
    const link = t.link(id);
    assert.equal(link.id, id);
    assert.equal(t.linkTables().bandwidth[id], link.bandwidth);
    assert.equal(t.linkTables().latency[id], link.latency);
    if (link.kind === "ici") {
      ici++;
      assert.notEqual(link.direction, "on-chip");
      assert.notEqual(link.fromChip, link.toChip);
      assert.equal(link.bandwidth, TPU_V3.iciLinkBandwidth);
      assert.equal(link.latency, TPU_V3.iciLinkLatency);
      assert.equal(link.cores, undefined);
    } else {
      onChip++;
      assert.equal(link.direction, "on-chip");
      assert.equal(link.fromChip, link.toChip);
      assert.equal(link.bandwidth, TPU_V3.onChipBandwidth);
      assert.equal(link.latency, TPU_V3.onChipLatency);
      assert.ok(link.cores);
      assert.notEqual(link.cores[0], link.cores[1]);
    }
  }
  assert.equal(ici, 8);
  assert.equal(onChip, 8);
  assert.equal(TPU_V3.iciLinkBandwidth, 82e9);
  assert.equal(TPU_V3.onChipBandwidth, 450e9);
  // The on-chip link from core 1 to core 0 of chip 3 (ids 7 -> 6).
  const back = t.link(t.route(7, 6)[0]);
  assert.equal(back.fromChip, 3);
  assert.deepEqual(back.cores, [1, 0]);
});

test("v3-8 has 16 links: 8 ICI and 8 on-chip directions", () => {
  assert.equal(sliceTopology("v3-8").linkCount, 4 * 2 + 4 * 2);
});

test("v3-2048 has 1024*4 ICI and 1024*2 on-chip links", () => {
  const pod = sliceTopology("v3-2048");
  assert.equal(pod.linkCount, 1024 * 4 + 1024 * 2);
  const tables = pod.linkTables();
  assert.equal(tables.bandwidth.length, pod.linkCount);
  assert.equal(tables.latency.length, pod.linkCount);
  const ici = tables.bandwidth.filter((b) => b === TPU_V3.iciLinkBandwidth).length;
  assert.equal(ici, 4096);
});

test("mesh slices have one link per direction per adjacent chip pair plus on-chip links", () => {
  for (const [name, side] of [["v3-32", 4], ["v3-128", 8], ["v3-512", 16]] as const) {
    const t = sliceTopology(name);
    assert.equal(t.linkCount, meshIciLinks(side, side) + side * side * 2, name);
  }
});

test("a hardware override with 100 GB/s ICI links changes every ICI link's bandwidth", () => {
  const hardware = { ...TPU_V3, iciLinkBandwidth: 100e9, iciLinkLatency: 2e-6 };
  for (
    const t of [
      sliceTopology("v3-8", { hardware }),
      createTopology({ chips: [3, 2], wrap: [true, true], hardware }),
    ]
  ) {
    assert.deepEqual(t.hardware, hardware);
    assert.notEqual(t.hardware, hardware, "the topology keeps its own frozen copy");
    assert.ok(Object.isFrozen(t.hardware));
    let ici = 0;
    for (let id = 0; id < t.linkCount; id++) {
      const link = t.link(id);
      if (link.kind === "ici") {
        ici++;
        assert.equal(link.bandwidth, 100e9);
        assert.equal(link.latency, 2e-6);
      } else {
        assert.equal(link.bandwidth, TPU_V3.onChipBandwidth);
      }
    }
    assert.ok(ici > 0);
  }
  // The preset itself is untouched.
  assert.equal(sliceTopology("v3-8").link(0).bandwidth, 82e9);
});

// --- Other shapes --------------------------------------------------------------------------

test("ringTopology and torusTopology have 1 core per chip and meshTopology has 2", () => {
  const ring = ringTopology(8);
  assert.equal(ring.coresPerChip, 1);
  assert.equal(ring.coreCount, 8);
  assert.equal(ring.chipsX, 8);
  assert.equal(ring.chipsY, 1);
  assert.deepEqual(ring.wrap, [true, false]);
  assert.equal(ring.linkCount, 16);

  const torus = torusTopology(4, 4);
  assert.equal(torus.coresPerChip, 1);
  assert.equal(torus.coreCount, 16);
  assert.deepEqual(torus.wrap, [true, true]);
  assert.equal(torus.hopCount(0, 15), 2);
  assert.equal(torus.linkCount, 64);

  const mesh = meshTopology(8, 8);
  assert.equal(mesh.coresPerChip, 2);
  assert.equal(mesh.coreCount, 128);
  assert.deepEqual(mesh.wrap, [false, false]);
  assert.equal(mesh.linkCount, meshIciLinks(8, 8) + 128);
  assert.deepEqual(meshTopology(4, 4, { wrap: true }).wrap, [true, true]);
});

test("parseShape reads AxB and rejects 8x, 0x4, axb and 8x8x8", () => {
  assert.deepEqual(parseShape("8x8"), [8, 8]);
  assert.deepEqual(parseShape("32x16"), [32, 16]);
  for (const bad of ["8x", "0x4", "4x0", "axb", "8x8x8", "", "x8", "-1x4"]) {
    throwsTopologyError(() => parseShape(bad), `"${bad}"`);
  }
});

// --- Property: routes are connected, dimension-ordered shortest paths ----------------------

test("routes on random shapes are connected dimension-ordered paths of the expected length", () => {
  const shape = fc.record({
    x: fc.integer({ min: 1, max: 6 }),
    y: fc.integer({ min: 1, max: 6 }),
    wrapX: fc.boolean(),
    wrapY: fc.boolean(),
    cores: fc.integer({ min: 1, max: 2 }),
  });
  const withPair = shape.chain((s) => {
    const n = s.x * s.y * s.cores;
    return fc.tuple(
      fc.constant(s),
      fc.integer({ min: 0, max: n - 1 }),
      fc.integer({ min: 0, max: n - 1 }),
    );
  });
  const axisDistance = (d: number, size: number, wrap: boolean) => {
    const a = Math.abs(d);
    return wrap && size > 1 ? Math.min(a, size - a) : a;
  };
  fc.assert(
    fc.property(withPair, ([s, a, b]) => {
      const t = createTopology({
        chips: [s.x, s.y],
        wrap: [s.wrapX, s.wrapY],
        coresPerChip: s.cores,
      });
      const route = t.route(a, b);
      const links = route.map((id) => t.link(id));
      const ca = t.coreCoord(a);
      const cb = t.coreCoord(b);
      if (a === b) {
        assert.deepEqual(route, []);
        return;
      }
      if (t.chipOf(a) === t.chipOf(b)) {
        assert.equal(links.length, 1);
        assert.equal(links[0].kind, "on-chip");
        assert.equal(links[0].fromChip, t.chipOf(a));
        assert.deepEqual(links[0].cores, [ca.core, cb.core]);
        return;
      }
      const expected = axisDistance(cb.x - ca.x, s.x, s.wrapX) +
        axisDistance(cb.y - ca.y, s.y, s.wrapY);
      assert.equal(links.length, expected);
      assert.equal(t.hopCount(a, b), expected);
      assert.equal(links[0].fromChip, t.chipOf(a));
      assert.equal(links[links.length - 1].toChip, t.chipOf(b));
      let seenY = false;
      for (let i = 0; i < links.length; i++) {
        const link = links[i];
        assert.equal(link.kind, "ici");
        if (i + 1 < links.length) assert.equal(link.toChip, links[i + 1].fromChip);
        // Each link moves one chip in its direction (modulo the size where it wraps).
        const fx = link.fromChip % s.x;
        const fy = Math.floor(link.fromChip / s.x);
        const tx = link.toChip % s.x;
        const ty = Math.floor(link.toChip / s.x);
        const step = link.direction[0] === "+" ? 1 : -1;
        if (link.direction.endsWith("x")) {
          assert.ok(!seenY, "no x hop after a y hop");
          assert.equal(ty, fy);
          assert.equal(tx, (fx + step + s.x) % s.x);
          if (!s.wrapX) assert.equal(tx, fx + step);
        } else {
          seenY = true;
          assert.equal(tx, fx);
          assert.equal(ty, (fy + step + s.y) % s.y);
          if (!s.wrapY) assert.equal(ty, fy + step);
        }
        // All hops along one dimension go the same way.
        if (i > 0 && links[i - 1].direction.at(-1) === link.direction.at(-1)) {
          assert.equal(links[i - 1].direction, link.direction);
        }
      }
    }),
    { numRuns: 500 },
  );
});

// --- Bad input -----------------------------------------------------------------------------

test("an unknown slice name throws a TopologyError listing the known slices", () => {
  throwsTopologyError(
    () => sliceTopology("v3-9"),
    `"v3-9"`,
    "v3-8",
    "v3-32",
    "v3-128",
    "v3-512",
    "v3-2048",
  );
  // Names inherited from Object.prototype are not slices either.
  throwsTopologyError(() => sliceTopology("toString"), `"toString"`);
});

test("chip counts of 0, -1, 1.5 or NaN throw a TopologyError naming the value", () => {
  for (const bad of [0, -1, 1.5, NaN, Infinity]) {
    throwsTopologyError(
      () => createTopology({ chips: [bad, 2], wrap: [false, false] }),
      "chips along x",
      `got ${bad}`,
    );
    throwsTopologyError(
      () => createTopology({ chips: [2, bad], wrap: [false, false] }),
      "chips along y",
      `got ${bad}`,
    );
    throwsTopologyError(
      () => createTopology({ chips: [2, 2], wrap: [false, false], coresPerChip: bad }),
      "cores per chip",
      `got ${bad}`,
    );
  }
  throwsTopologyError(() => ringTopology(0), "got 0");
  throwsTopologyError(() => torusTopology(2, -1), "got -1");
});

test("a topology above the core limit throws a TopologyError instead of allocating", () => {
  throwsTopologyError(
    () => createTopology({ chips: [1024, 1024], wrap: [true, true] }),
    "1024x1024",
    "exceeds",
  );
});

test("coreCoord of -1, 8 or 1.5 on v3-8 throws a TopologyError", () => {
  const t = sliceTopology("v3-8");
  for (const bad of [-1, 8, 1.5, NaN]) {
    throwsTopologyError(() => t.coreCoord(bad), `${bad}`, "v3-8", "0..7");
  }
  throwsTopologyError(() => t.chipOf(8), "8");
  throwsTopologyError(() => t.route(0, 8), "route destination 8");
  throwsTopologyError(() => t.route(-1, 0), "route source -1");
  throwsTopologyError(() => t.link(16), "link 16", "0..15");
});

test("coreId of a coordinate outside the slice throws a TopologyError", () => {
  const t = sliceTopology("v3-8");
  for (
    const coord of [
      { x: 2, y: 0, core: 0 },
      { x: 0, y: 2, core: 0 },
      { x: 0, y: 0, core: 2 },
      { x: -1, y: 0, core: 0 },
      { x: 0.5, y: 0, core: 0 },
    ]
  ) {
    throwsTopologyError(() => t.coreId(coord), `x=${coord.x}`, "v3-8");
  }
});

test("hardware with zero ICI bandwidth or zero HBM throws a TopologyError naming the field", () => {
  throwsTopologyError(
    () => sliceTopology("v3-8", { hardware: { ...TPU_V3, iciLinkBandwidth: 0 } }),
    "iciLinkBandwidth",
    "got 0",
  );
  throwsTopologyError(
    () =>
      createTopology({
        chips: [2, 2],
        wrap: [false, false],
        hardware: { ...TPU_V3, hbmBytesPerCore: 0 },
      }),
    "hbmBytesPerCore",
    "got 0",
  );
  throwsTopologyError(
    () => ringTopology(4, { hardware: { ...TPU_V3, iciLinkLatency: -1 } }),
    "iciLinkLatency",
  );
  throwsTopologyError(
    () => meshTopology(2, 2, { hardware: { ...TPU_V3, coresPerChip: 0 } }),
    "coresPerChip",
  );
});

test("wraparound on a dimension of one or two chips adds no link", () => {
  const ring2 = ringTopology(2);
  assert.deepEqual(ring2.wrap, [false, false]);
  assert.equal(ring2.linkCount, 2);
  const torus2 = createTopology({ chips: [2, 2], wrap: [true, true], coresPerChip: 1 });
  assert.equal(torus2.linkCount, sliceTopology("v3-8").linkCount - 4 * 2);
  assert.deepEqual(createTopology({ chips: [3, 2], wrap: [true, true] }).wrap, [true, false]);
});
