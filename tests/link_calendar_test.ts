import assert from "node:assert/strict";
import { LinkCalendar } from "../src/actors/link_calendar.ts";
import { fc } from "./_deps.ts";
import { test } from "./_test.ts";

test("a free link is booked at once, and back-to-back bookings queue", () => {
  const calendar = new LinkCalendar(1);
  assert.equal(calendar.reserve(0, 0, 2, 0), 0);
  assert.equal(calendar.reserve(0, 0, 2, 0), 2);
  assert.equal(calendar.reserve(0, 1, 1, 0), 4);
});

test("a short transfer fills the gap before a booking made earlier for later", () => {
  const calendar = new LinkCalendar(1);
  assert.equal(calendar.reserve(0, 5, 10, 0), 5);
  assert.equal(calendar.reserve(0, 0, 3, 0), 0);
  assert.equal(calendar.reserve(0, 0, 3, 0), 15, "a 3 s gap is left at [3, 5): too short");
  assert.equal(calendar.reserve(0, 0, 2, 0), 3, "a 2 s transfer fits [3, 5)");
});

test("bookings that ended before now are forgotten", () => {
  const calendar = new LinkCalendar(1);
  calendar.reserve(0, 0, 1, 0);
  assert.equal(calendar.reserve(0, 2, 1, 2), 2);
});

test("bookings never overlap and each starts as early as it can, as time moves on", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: 3 }), // how far `now` moves before this request
          fc.integer({ min: 0, max: 30 }), // how far after `now` the head arrives
          fc.integer({ min: 0, max: 8 }), // duration
        ),
        { maxLength: 80 },
      ),
      (requests) => {
        const calendar = new LinkCalendar(1, Infinity); // remembers every gap: exact
        const booked: [number, number][] = [];
        let now = 0;
        for (const [step, delay, duration] of requests) {
          now += step;
          const earliest = now + delay;
          const start = calendar.reserve(0, earliest, duration, now);
          assert.ok(start >= earliest);
          if (duration === 0) continue;
          const end = start + duration;
          for (const [s, e] of booked) assert.ok(end <= s || start >= e, "overlap");
          // No earlier start would have fitted: every earlier candidate collides with a booking.
          for (let t = earliest; t < start; t++) {
            assert.ok(booked.some(([s, e]) => t < e && t + duration > s), `could start at ${t}`);
          }
          booked.push([start, end]);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("a link that remembers few gaps stays conservative: no overlaps, never too early", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: 2 }),
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: 1, max: 5 }),
        ),
        { maxLength: 120 },
      ),
      (requests) => {
        const calendar = new LinkCalendar(1, 2);
        const booked: [number, number][] = [];
        let now = 0;
        for (const [step, delay, duration] of requests) {
          now += step;
          const start = calendar.reserve(0, now + delay, duration, now);
          assert.ok(start >= now + delay);
          for (const [s, e] of booked) assert.ok(start + duration <= s || start >= e, "overlap");
          booked.push([start, start + duration]);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("a link remembers at most its cap of gaps, and forgets those that closed", () => {
  const calendar = new LinkCalendar(1, 4);
  // Bookings every 5 s leave a 4 s gap behind each one after the first.
  for (let t = 0; t < 50; t += 5) calendar.reserve(0, t, 1, 0);
  assert.equal(calendar.gaps(0), 4);
  assert.equal(calendar.reserve(0, 2, 1, 0), 26, "gaps before 26 s were forgotten");
  assert.equal(calendar.reserve(0, 100, 1, 100), 100);
  assert.equal(calendar.gaps(0), 0);
});
