// Test-only dependencies, named once with full specifiers (see src/_xstate.ts for why).
// deno-lint-ignore-file no-import-prefix
export { default as fc } from "npm:fast-check@4.10.2";
export { getAdjacencyMap, getShortestPaths, getSimplePaths } from "npm:xstate@5.33.3/graph";
