/**
 * When each link direction is busy. A transfer takes the earliest gap on a link that starts at
 * or after its head reaches the link and is long enough for its bytes, so a short message is
 * not held back by a long one that was booked earlier for a later time. (Two transfers that
 * want the same link at the same instant still go in the order the runtime handles them:
 * deterministic, by time and then send order.)
 *
 * @module
 */

/** How many gaps a link remembers by default; see {@linkcode LinkCalendar}. */
const MAX_HOLES = 32;

/**
 * Per link: the end of its latest booking, and the free gaps ("holes") left before that end.
 * Holes only appear when a message's head reaches a link after the link went idle (a later hop
 * of a multi-hop route), so the common booking is one typed-array read and write. A link
 * remembers at most `maxHoles` gaps (the scan for a gap is linear): past that it forgets the
 * shortest, treating it as busy, which can only delay a later transfer, never overlap two.
 */
export class LinkCalendar {
  readonly #end: Float64Array;
  // Per link: free [start, end) pairs before #end, sorted; undefined until a hole appears.
  readonly #holes: (number[] | undefined)[];
  // Per link: at least the length of its longest hole, so a transfer longer than every hole
  // skips the scan (most of them, under heavy traffic). Tightened by every scan that fails.
  readonly #longest: Float64Array;
  readonly #maxHoles: number;

  constructor(linkCount: number, maxHoles: number = MAX_HOLES) {
    this.#end = new Float64Array(linkCount);
    this.#holes = new Array(linkCount);
    this.#longest = new Float64Array(linkCount);
    this.#maxHoles = maxHoles;
  }

  /**
   * Books `duration` seconds on `link` at the earliest start >= `earliest` that fits, and
   * returns that start. `earliest` is never before `now`; holes that closed by `now` are
   * forgotten. A zero duration occupies nothing.
   */
  reserve(link: number, earliest: number, duration: number, now: number): number {
    if (duration === 0) return earliest;
    const end = this.#end[link];
    const holes = this.#holes[link];
    if (holes !== undefined && holes.length > 0 && holes[1] <= now) {
      let past = 2;
      while (past < holes.length && holes[past + 1] <= now) past += 2;
      holes.splice(0, past);
    }
    if (earliest >= end) {
      if (earliest > end && earliest > now) this.#addHole(link, Math.max(end, now), earliest);
      this.#end[link] = earliest + duration;
      return earliest;
    }
    if (holes !== undefined && duration <= this.#longest[link]) {
      // Holes are sorted and disjoint: skip, by bisection, those that end before `earliest`.
      let lo = 0;
      let hi = holes.length >> 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (holes[2 * mid + 1] <= earliest) lo = mid + 1;
        else hi = mid;
      }
      let longest = 0;
      for (let i = 2 * lo; i < holes.length; i += 2) {
        const from = holes[i];
        const to = holes[i + 1];
        const start = from > earliest ? from : earliest;
        const stop = start + duration;
        if (stop > to) {
          if (to - from > longest) longest = to - from;
          continue;
        }
        // Keep what is left of the hole on either side of the booking.
        if (start > from && stop < to) {
          holes.splice(i + 1, 0, start, stop);
          this.#trim(holes);
        } else if (start > from) holes[i + 1] = start;
        else if (stop < to) holes[i] = stop;
        else holes.splice(i, 2);
        return start;
      }
      // Every hole was seen (none skipped): the bound is now exact.
      if (lo === 0) this.#longest[link] = longest;
    }
    this.#end[link] = end + duration;
    return end;
  }

  /** How many gaps `link` remembers now (for diagnostics and tests). */
  gaps(link: number): number {
    return (this.#holes[link]?.length ?? 0) / 2;
  }

  #addHole(link: number, start: number, end: number): void {
    const holes = this.#holes[link] ??= [];
    holes.push(start, end); // every hole so far ends before `start`: the list stays sorted
    if (end - start > this.#longest[link]) this.#longest[link] = end - start;
    this.#trim(holes);
  }

  /** Past the cap, forget the shortest hole (the earliest among equals). */
  #trim(holes: number[]): void {
    if (holes.length <= 2 * this.#maxHoles) return;
    let shortest = 0;
    for (let i = 2; i < holes.length; i += 2) {
      if (holes[i + 1] - holes[i] < holes[shortest + 1] - holes[shortest]) shortest = i;
    }
    holes.splice(shortest, 2);
  }
}
