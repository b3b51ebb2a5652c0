/**
 * When each link direction is busy. A transfer takes the earliest gap on a link that starts at
 * or after its head reaches the link and is long enough for its bytes, so a short message is
 * not held back by a long one that was booked earlier for a later time (and results do not
 * depend on which core's send the runtime handled first).
 *
 * @module
 */

/**
 * Per link: the end of its latest booking, and the free gaps ("holes") left before that end.
 * Holes only appear when a message's head reaches a link after the link went idle (a later hop
 * of a multi-hop route), so the common booking is one typed-array read and write.
 */
export class LinkCalendar {
  readonly #end: Float64Array;
  // Per link: free [start, end) pairs before #end, sorted; undefined until a hole appears.
  readonly #holes: (number[] | undefined)[];

  constructor(linkCount: number) {
    this.#end = new Float64Array(linkCount);
    this.#holes = new Array(linkCount);
  }

  /**
   * Books `duration` seconds on `link` at the earliest start >= `earliest` that fits, and
   * returns that start. `earliest` is never before `now`; holes that closed by `now` are
   * forgotten. A zero duration occupies nothing.
   */
  reserve(link: number, earliest: number, duration: number, now: number): number {
    if (duration === 0) return earliest;
    const end = this.#end[link];
    if (earliest >= end) {
      if (earliest > end && earliest > now) this.#addHole(link, Math.max(end, now), earliest);
      this.#end[link] = earliest + duration;
      return earliest;
    }
    const holes = this.#holes[link];
    if (holes !== undefined) {
      let past = 0;
      while (past < holes.length && holes[past + 1] <= now) past += 2;
      if (past > 0) holes.splice(0, past);
      for (let i = 0; i < holes.length; i += 2) {
        const start = Math.max(holes[i], earliest);
        const stop = start + duration;
        if (stop > holes[i + 1]) continue;
        // Keep what is left of the hole on either side of the booking.
        const pieces: number[] = [];
        if (start > holes[i]) pieces.push(holes[i], start);
        if (stop < holes[i + 1]) pieces.push(stop, holes[i + 1]);
        holes.splice(i, 2, ...pieces);
        return start;
      }
    }
    this.#end[link] = end + duration;
    return end;
  }

  #addHole(link: number, start: number, end: number): void {
    const holes = this.#holes[link] ??= [];
    holes.push(start, end); // every hole so far ends before `start`: the list stays sorted
  }
}
