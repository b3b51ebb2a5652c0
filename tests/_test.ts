/**
 * `test(name, fn)`: a Deno test that runs with no permissions at all, which proves the
 * library needs none. Tests that need more (the loopback URL import) use Deno.test directly.
 */
export function test(name: string, fn: (t: Deno.TestContext) => void | Promise<void>): void {
  Deno.test({ name, permissions: "none", fn });
}
