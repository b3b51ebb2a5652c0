import assert from "node:assert/strict";
import { EventQueue } from "../src/actors/event_queue.ts";
import { fc } from "./_deps.ts";
import { test } from "./_test.ts";

test("events come out in time order, and in insertion order among equal times", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 3000 }), (times) => {
      const queue = new EventQueue<number>();
      times.forEach((t, i) => queue.push(t, i));
      const expected = times.map((t, i) => [t, i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      const got: number[] = [];
      while (queue.size > 0) got.push(queue.pop()!);
      assert.deepEqual(got, expected.map(([, i]) => i));
    }),
    { numRuns: 200 },
  );
});

test("pushes between pops keep the order", () => {
  const queue = new EventQueue<string>();
  queue.push(2, "b");
  queue.push(1, "a");
  assert.equal(queue.pop(), "a");
  queue.push(2, "c");
  queue.push(0.5, "z");
  assert.equal(queue.peekTime(), 0.5);
  assert.deepEqual([queue.pop(), queue.pop(), queue.pop(), queue.pop()], [
    "z",
    "b",
    "c",
    undefined,
  ]);
  assert.equal(queue.peekTime(), Infinity);
});
