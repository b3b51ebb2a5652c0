import assert from "node:assert/strict";
import { main as deadlockExample } from "../examples/deadlock.ts";
import { test } from "./_test.ts";

function run(args: string[]): { code: number; out: string; err: string } {
  const out: string[] = [];
  const err: string[] = [];
  const code = deadlockExample(args, (l) => out.push(l), (l) => err.push(l));
  return { code, out: out.join("\n"), err: err.join("\n") };
}

test("examples/deadlock.ts reports the deadlock, runs the fix, and exits 0", () => {
  const { code, out } = run([]);
  assert.equal(code, 0);
  assert.match(out, /receive first: deadlocked/);
  assert.match(out, /core 0 waits for core 7 \(tag "block"\), which is itself waiting/);
  assert.match(out, /cycle of 8: 0 -> 7 -> 6 -> 5 -> 4 -> 3 -> 2 -> 1 -> 0/);
  assert.match(out, /core states: 8 deadlocked/);
  assert.match(out, /send first: completed in [\d.]+ us simulated, 8 messages, 33554432 bytes/);
});

test("examples/deadlock.ts refuses an unknown flag or slice with exit code 2", () => {
  const flag = run(["--bogus"]);
  assert.equal(flag.code, 2);
  assert.match(flag.err, /Unknown option '--bogus'/);
  const slice = run(["--slice", "v3-9"]);
  assert.equal(slice.code, 2);
  assert.match(slice.err, /unknown slice "v3-9"; known slices: v3-8, v3-32/);
});
