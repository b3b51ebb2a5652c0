// The one place podsim names its xstate dependency. A full `npm:` specifier (not a bare
// "xstate" mapped in deno.json) keeps `mod.ts` importable from a URL: a remote importer never
// reads this repository's deno.json.
// deno-lint-ignore-file no-import-prefix
export { assign, createActor, fromTransition, setup, transition } from "npm:xstate@5.33.3";
export type {
  Actor,
  ActorLogic,
  AnyActorRef,
  AnyStateMachine,
  EventObject,
  InspectionEvent,
  Observer,
  Snapshot,
} from "npm:xstate@5.33.3";
