/**
 * The discrete-event queue: a binary min-heap keyed by (simulated time, insertion order). The
 * insertion-order tie-break makes runs deterministic: events at the same time are handled in
 * the order they were scheduled. Keys live in typed arrays beside the items, so pushing and
 * popping allocate nothing once the heap has grown.
 *
 * @module
 */

/** A min-heap of items keyed by time, first-in first-out among equal times. */
export class EventQueue<T> {
  #time = new Float64Array(1024);
  #seq = new Float64Array(1024);
  #items: (T | undefined)[] = [];
  #size = 0;
  #next = 0;

  /** Number of queued events. */
  get size(): number {
    return this.#size;
  }

  /** Time of the earliest event (Infinity when empty). */
  peekTime(): number {
    return this.#size > 0 ? this.#time[0] : Infinity;
  }

  /** Queues `item` at `time`. */
  push(time: number, item: T): void {
    if (this.#size === this.#time.length) this.#grow();
    const seq = this.#next++;
    let i = this.#size++;
    const times = this.#time;
    const seqs = this.#seq;
    const items = this.#items;
    // Sift up: move parents down until the slot for the new key is found.
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (times[p] < time || (times[p] === time && seqs[p] < seq)) break;
      times[i] = times[p];
      seqs[i] = seqs[p];
      items[i] = items[p];
      i = p;
    }
    times[i] = time;
    seqs[i] = seq;
    items[i] = item;
  }

  /** Removes and returns the earliest event's item, or undefined when empty. */
  pop(): T | undefined {
    if (this.#size === 0) return undefined;
    const times = this.#time;
    const seqs = this.#seq;
    const items = this.#items;
    const top = items[0];
    const n = --this.#size;
    const time = times[n];
    const seq = seqs[n];
    const item = items[n];
    items[n] = undefined;
    // Sift down the former last element from the root.
    let i = 0;
    while (true) {
      let c = 2 * i + 1;
      if (c >= n) break;
      const r = c + 1;
      if (r < n && (times[r] < times[c] || (times[r] === times[c] && seqs[r] < seqs[c]))) c = r;
      if (time < times[c] || (time === times[c] && seq < seqs[c])) break;
      times[i] = times[c];
      seqs[i] = seqs[c];
      items[i] = items[c];
      i = c;
    }
    if (n > 0) {
      times[i] = time;
      seqs[i] = seq;
      items[i] = item;
    }
    return top;
  }

  #grow(): void {
    const time = new Float64Array(this.#time.length * 2);
    const seq = new Float64Array(this.#seq.length * 2);
    time.set(this.#time);
    seq.set(this.#seq);
    this.#time = time;
    this.#seq = seq;
  }
}
