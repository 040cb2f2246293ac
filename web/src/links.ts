// Links to lines: /builds/<id>#L1234 and ranges #L10-L20. Every line's
// number is a link to it; a click selects the line, a shift-click the range
// from the line selected before. Opening the page with such a fragment (or
// changing it) brings the line into view and highlights the range, however
// far it is from the tail: the page waits until the line is held (the
// earlier lines stream in behind the tail), unfolds the steps around it and
// renders a window around it.

import type { LogStore } from "./store.js";
import { decorators, type LogView } from "./view.js";

export interface Range {
  readonly from: number;
  readonly to: number;
}

/** The line range a fragment names (`L12`, `L10-L20`, `L10-20`, among `&`-separated parts), or null. */
export function parseTarget(hash: string): Range | null {
  for (const part of hash.replace(/^#/, "").split("&")) {
    const found = /^L(\d{1,15})(?:-L?(\d{1,15}))?$/.exec(part);
    if (found === null) continue;
    const a = Number(found[1]);
    const b = found[2] === undefined ? a : Number(found[2]);
    if (a < 1 || b < 1) return null;
    return { from: Math.min(a, b), to: Math.max(a, b) };
  }
  return null;
}

export function fragment(range: Range): string {
  return range.from === range.to ? `#L${range.from}` : `#L${range.from}-L${range.to}`;
}

export class Links {
  private range: Range | null = null;
  private pending: Range | null = null;
  private waiting = 0;

  constructor(
    private readonly view: LogView,
    private readonly store: LogStore,
    private readonly container: HTMLElement,
    /** Make line `seq` shown (unfold its steps); true when that changed the view. */
    private readonly reveal: (seq: number) => void,
  ) {
    decorators.push((line, row) => {
      if (this.range !== null && line.seq >= this.range.from && line.seq <= this.range.to) row.classList.add("highlighted");
    });
    container.addEventListener("click", (event) => {
      const target = event.target as HTMLElement;
      if (!target.classList.contains("ln")) return;
      event.preventDefault();
      const seq = Number(target.parentElement?.dataset.sequence);
      const range =
        event.shiftKey && this.range !== null
          ? { from: Math.min(this.range.from, seq), to: Math.max(this.range.to, seq) }
          : { from: seq, to: seq };
      this.select(range);
    });
    window.addEventListener("hashchange", () => {
      const range = parseTarget(location.hash);
      if (range !== null) this.go(range);
    });
  }

  /** Highlight `range` and put it in the address bar (the link to copy), without moving the view. */
  select(range: Range): void {
    this.range = range;
    history.replaceState(history.state, "", location.pathname + location.search + fragment(range));
    for (const row of this.container.querySelectorAll<HTMLElement>(".line")) {
      const seq = Number(row.dataset.sequence);
      row.classList.toggle("highlighted", seq >= range.from && seq <= range.to);
    }
  }

  /** Highlight `range` and bring its first line into view, once it is held. */
  go(range: Range): void {
    this.range = range;
    this.pending = range;
    history.replaceState(history.state, "", location.pathname + location.search + fragment(range));
    document.body.dataset.target = "loading";
    this.attempt();
  }

  /** Called whenever lines arrived: a pending jump may now find its line. */
  arrived(): void {
    if (this.pending !== null && this.waiting === 0) this.waiting = requestAnimationFrame(() => this.attempt());
  }

  private attempt(): void {
    this.waiting = 0;
    const range = this.pending;
    if (range === null) return;
    const lines = this.store.lines;
    const last = lines[lines.length - 1]?.seq ?? 0;
    const missing = this.store.missingEarlier;
    // Held: in the tail, or in a head that reached the tail (the view shows the head once it is whole).
    const held = last >= range.from && (missing === 0 || range.from > this.store.headCursor + missing);
    if (!held) {
      // Not held yet (the history is still streaming in): a later arrival tries again.
      return;
    }
    this.pending = null;
    this.reveal(range.from);
    if (!this.view.jumpTo(range.from)) {
      document.body.dataset.target = "missing";
      return;
    }
    document.body.dataset.target = "shown";
  }
}
