// The lines of one build's log held by the page, and the view of them the
// level filter leaves.
//
// The page first asks for the log's tail (so it paints at once, however long
// the log is) and follows it live; a second stream then reads the earlier
// lines, oldest first. So the lines arrive as two runs: the head, 1..n from
// the history, and the tail, T+1.. from the live stream, where T is the
// sequence just before the first line of the tail. Both runs are gapless
// (every line has the next sequence number of its build), so a line is
// accepted only when it is the next one of its run: a line seen before is
// never added twice, whatever a reconnect sends again.

export interface Line {
  readonly seq: number;
  readonly level: number;
  readonly message: string;
  /** Milliseconds since the epoch. */
  readonly time: number;
  /** The writer's metadata (a `tool` line's command and exit code), when set. */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** The step this line opens or closes (steps.ts), when set. */
  readonly step?: StepMark;
}

export interface StepMark {
  readonly id: string;
  readonly name: string;
  readonly start: boolean;
}

/** What changed in the view, for the renderer. */
export interface ViewListener {
  /** `count` lines were inserted at `index` (earlier lines, before the tail). */
  inserted(index: number, count: number): void;
  /** Lines were appended at the end. */
  appended(): void;
  /** The view was rebuilt (the filter changed). */
  reset(): void;
}

export class LogStore {
  /** Every line held, in sequence order: the head, then the tail. */
  private readonly all: Line[] = [];
  private headLast = 0; // the head's last sequence
  private headLength = 0; // its lines in `all`
  /** The lines the filter lets through, in sequence order. */
  private shown: Line[] = [];
  private shownHead = 0;
  private levels: ReadonlySet<number> | null = null; // null: every level
  /** Lines hidden besides the level filter (those of a folded step). */
  private folded: ((line: Line) => boolean) | null = null;
  private tailStart: number | null = null;
  private tailLast = 0;
  readonly counts = new Map<number, number>();
  /** Lines sent again by the server and dropped (a reconnect that overlapped). */
  repeats = 0;
  /** Lines whose sequence skipped ahead of the one expected: never expected. */
  gaps = 0;
  private listeners: ViewListener[] = [];

  listen(listener: ViewListener): void {
    this.listeners.push(listener);
  }

  get view(): readonly Line[] {
    return this.shown;
  }

  get size(): number {
    return this.all.length;
  }

  /** The number of lines before the tail that are not held yet. */
  get missingEarlier(): number {
    return this.tailStart === null ? 0 : this.tailStart - this.headLast;
  }

  /** The sequence just before the tail's first line (0: the tail is the whole log). */
  startTail(before: number): void {
    if (this.tailStart !== null) return;
    this.tailStart = before;
    this.tailLast = before;
  }

  /** Lines of the live stream; those not the next of the tail are dropped (counted). */
  addTail(lines: readonly Line[]): void {
    if (this.tailStart === null) throw new Error("startTail first");
    const added = this.next(lines, this.tailLast, Infinity);
    if (added.length === 0) return;
    this.tailLast = added[added.length - 1]!.seq;
    this.all.push(...added);
    const shown = this.count(added);
    if (shown.length === 0) return;
    this.shown.push(...shown);
    for (const listener of this.listeners) listener.appended();
  }

  /** Lines of the history stream (oldest first); only those before the tail are kept. */
  addHead(lines: readonly Line[]): void {
    const added = this.next(lines, this.headLast, this.tailStart ?? 0);
    if (added.length === 0) return;
    this.headLast = added[added.length - 1]!.seq;
    this.all.splice(this.headLength, 0, ...added);
    this.headLength += added.length;
    const shown = this.count(added);
    if (shown.length === 0) return;
    const index = this.shownHead;
    this.shown.splice(index, 0, ...shown);
    this.shownHead += shown.length;
    for (const listener of this.listeners) listener.inserted(index, shown.length);
  }

  /** The lines that continue a run whose last line is `last`, up to `limit`: repeats are dropped and counted. */
  private next(lines: readonly Line[], last: number, limit: number): Line[] {
    const taken: Line[] = [];
    for (const line of lines) {
      if (line.seq > limit) break;
      if (line.seq <= last) {
        this.repeats++;
        continue;
      }
      if (line.seq !== last + 1) {
        this.gaps++;
        console.error(`log line ${line.seq} arrived after ${last}: lines are missing`);
      }
      last = line.seq;
      taken.push(line);
    }
    return taken;
  }

  /** The history stream's resume cursor: its last line. */
  get headCursor(): number {
    return this.headLast;
  }

  /** Every line held, in sequence order (the head, then the tail). */
  get lines(): readonly Line[] {
    return this.all;
  }

  /** Hide the lines `hidden` says (a folded step's), and show the view again. */
  fold(hidden: ((line: Line) => boolean) | null): void {
    this.folded = hidden;
    this.filter(this.levels);
  }

  /** The first line held committed at or after `time` (ms), or null. Times never decrease along the log. */
  firstAtOrAfter(time: number): Line | null {
    let low = 0;
    let high = this.all.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.all[middle]!.time < time) low = middle + 1;
      else high = middle;
    }
    return this.all[low] ?? null;
  }

  /** Show only `levels` (null: all). */
  filter(levels: ReadonlySet<number> | null): void {
    this.levels = levels;
    this.shown = this.all.filter((line) => this.passes(line));
    this.shownHead = this.indexOf(this.headLast + 1);
    for (const listener of this.listeners) listener.reset();
  }

  /** The index in the view of the first line at or after `seq`. */
  indexOf(seq: number): number {
    let low = 0;
    let high = this.shown.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.shown[middle]!.seq < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** The earliest line before which nothing is missing from the view: earlier lines may be shown. */
  get contiguousFrom(): number {
    return this.missingEarlier === 0 ? 0 : this.shownHead;
  }

  private passes(line: Line): boolean {
    return (this.levels === null || this.levels.has(line.level)) && !(this.folded?.(line) ?? false);
  }

  /** Count `lines` by level; return those the filter lets through. */
  private count(lines: readonly Line[]): Line[] {
    for (const line of lines) this.counts.set(line.level, (this.counts.get(line.level) ?? 0) + 1);
    return this.levels === null && this.folded === null ? lines.slice() : lines.filter((line) => this.passes(line));
  }
}
