// The log on screen. A log may hold 100,000 lines and more, so the DOM holds
// only a window of them, at most MAX_ROWS rows: the view [from, to) of the
// store. Scrolling near the window's top renders earlier lines (and drops
// rows far below), near its bottom later ones. Rows are real, wrapped lines
// of any height, so no height is ever estimated.
//
// While the person is at the end of the log the view follows it: new lines
// are rendered as they come and the window's top is trimmed. Once they scroll
// up it stays where they are, counts what arrived, and offers to jump back.

import { renderAnsi } from "./ansi.js";
import type { Line, LogStore, ViewListener } from "./store.js";

const MAX_ROWS = 1500;
const CHUNK = 300; // rows rendered at a time when scrolling past the window
const EDGE = 1.5; // viewport heights from a window edge that render more

export const LEVEL_NAMES: Record<number, string> = { 0: "-", 1: "INFO", 2: "WARN", 3: "ERROR", 4: "TOOL" };

/** What a search highlights: a line's match spans (UTF-16 offsets), and the line next/previous showed. */
export interface Highlight {
  marks(seq: number, message: string): [number, number][] | undefined;
  readonly currentSequence: number | null;
}

let highlight: Highlight | null = null;

/** Adds to a line's row as it is rendered (links, steps, times, metadata): `body` holds the message. */
export type Decorator = (line: Line, row: HTMLElement, body: HTMLElement) => void;
/** The decorators every row goes through, in order. */
export const decorators: Decorator[] = [];

function row(line: Line): HTMLElement {
  const element = document.createElement("div");
  element.className = `line level-${LEVEL_NAMES[line.level]?.toLowerCase() ?? "other"}`;
  const marks = highlight?.marks(line.seq, line.message);
  if (marks !== undefined) element.classList.add("match");
  if (highlight?.currentSequence === line.seq) element.classList.add("current");
  element.dataset.sequence = String(line.seq);
  // The line's number, a link to it (links.ts); not selectable, so copying skips it.
  const number = document.createElement("a");
  number.className = "ln";
  number.href = `#L${line.seq}`;
  number.textContent = String(line.seq);
  const level = document.createElement("span");
  level.className = "level";
  level.textContent = LEVEL_NAMES[line.level] ?? String(line.level);
  level.title = new Date(line.time).toISOString();
  const body = document.createElement("span");
  body.className = "body";
  const message = document.createElement("span");
  message.className = "message";
  renderAnsi(line.message, message, marks);
  body.append(message);
  element.append(number, level, body);
  for (const decorate of decorators) decorate(line, element, body);
  return element;
}

function rows(lines: readonly Line[], from: number, to: number): DocumentFragment {
  const fragment = document.createDocumentFragment();
  for (let i = from; i < to; i++) fragment.appendChild(row(lines[i]!));
  return fragment;
}

export interface ViewChrome {
  /** Whether the view follows the end, and how many lines came since it stopped. */
  following(follows: boolean, unseen: number): void;
  /** What lies above the window: lines to scroll to, lines still loading, or the log's start. */
  above(hidden: number, loading: number): void;
}

export class LogView implements ViewListener {
  private from = 0;
  private to = 0;
  private follows = true;
  private unseen = 0;
  private frame = 0;
  private lastTop = 0;

  constructor(
    private readonly scroller: HTMLElement,
    private readonly container: HTMLElement,
    private readonly store: LogStore,
    private readonly chrome: ViewChrome,
  ) {
    store.listen(this);
    scroller.addEventListener("scroll", () => this.scrolled(), { passive: true });
    // Leave the end at the first sign of scrolling up, before the scroll
    // event: a line arriving in between must not pull the view back down.
    scroller.addEventListener("wheel", (event) => event.deltaY < 0 && this.unfollow(), { passive: true });
    scroller.addEventListener("keydown", (event) => {
      if (event.key === "Home") {
        event.preventDefault();
        this.jumpToStart();
      } else if (event.key === "End") {
        event.preventDefault();
        this.jumpToEnd();
      } else if (["ArrowUp", "PageUp"].includes(event.key)) {
        this.unfollow();
      }
    });
    // A resized window, or rows that grew (fonts, wrapping), keep the end in view while following.
    const pin = new ResizeObserver(() => {
      if (this.follows) this.scroller.scrollTop = this.scroller.scrollHeight;
    });
    pin.observe(scroller);
    pin.observe(container);
  }

  get following(): boolean {
    return this.follows;
  }

  inserted(index: number, count: number): void {
    if (index <= this.from) {
      this.from += count;
      this.to += count;
    }
    this.schedule();
  }

  appended(): void {
    this.schedule();
  }

  reset(): void {
    const anchor = this.follows ? null : this.firstVisible();
    this.container.replaceChildren();
    const view = this.store.view;
    if (anchor === null) {
      this.from = this.to = Math.max(this.store.contiguousFrom, view.length - CHUNK);
      this.schedule();
      return;
    }
    const index = this.store.indexOf(anchor);
    this.from = Math.max(this.store.contiguousFrom, index - CHUNK);
    this.to = Math.min(view.length, index + CHUNK);
    this.container.appendChild(rows(view, this.from, this.to));
    const target = this.container.children[index - this.from] as HTMLElement | undefined;
    this.scroller.scrollTop = target?.offsetTop ?? 0; // the scroller is the rows' offsetParent
    this.report();
  }

  /** Render the rows again where they are (a decorator's input changed). */
  redraw(): void {
    this.reset();
  }

  /**
   * A new window around line `seq` (or the first line after it the filters
   * show), scrolled so that it is on screen a little below the top; false
   * when that line is not held yet.
   */
  jumpTo(seq: number): boolean {
    const view = this.store.view;
    const index = this.store.indexOf(seq);
    if (index >= view.length || index < this.store.contiguousFrom) return false;
    this.unfollow();
    this.container.replaceChildren();
    this.from = Math.max(this.store.contiguousFrom, index - CHUNK);
    this.to = Math.min(view.length, index + CHUNK);
    this.container.appendChild(rows(view, this.from, this.to));
    const target = this.container.children[index - this.from] as HTMLElement | undefined;
    this.scroller.scrollTop = Math.max(0, (target?.offsetTop ?? 0) - this.scroller.clientHeight / 4);
    this.lastTop = this.scroller.scrollTop;
    this.unseen = view.length - this.to;
    this.report();
    return true;
  }

  /** Follow the end again (the "jump to end" button). */
  jumpToEnd(): void {
    this.follows = true;
    this.unseen = 0;
    const end = this.store.view.length;
    if (end - this.to > CHUNK) {
      // Far behind: start the window over at the end instead of rendering everything in between.
      this.container.replaceChildren();
      this.from = this.to = Math.max(this.store.contiguousFrom, end - CHUNK);
    }
    this.render();
  }

  /** The first lines of the log (the Home key): a new window at the start, however far away. */
  jumpToStart(): void {
    this.unfollow();
    const view = this.store.view;
    this.container.replaceChildren();
    this.from = this.store.contiguousFrom;
    this.to = Math.min(view.length, this.from + 2 * CHUNK);
    this.container.appendChild(rows(view, this.from, this.to));
    this.scroller.scrollTop = 0;
    this.lastTop = 0;
    this.unseen = view.length - this.to;
    this.report();
  }

  /** Highlight a search's matches in the rows drawn (and in those drawn later). */
  setHighlight(source: Highlight): void {
    highlight = source;
  }

  /** The search's matches changed: draw the rows again that it marks, or marked. */
  marked(): void {
    const view = this.store.view;
    const children = this.container.children;
    for (let i = this.from; i < this.to; i++) {
      const old = children[i - this.from] as HTMLElement | undefined;
      const line = view[i];
      if (old === undefined || line === undefined) break;
      const marks = highlight?.marks(line.seq, line.message);
      const current = highlight?.currentSequence === line.seq;
      if (marks === undefined && !old.classList.contains("match") && !current && !old.classList.contains("current")) {
        continue;
      }
      old.replaceWith(row(line));
    }
  }

  /**
   * Put line `seq` in view, in the middle of the screen: in the rows drawn,
   * or in a new window drawn around it however far it is. False when the
   * line is not held (yet): the history is still loading it, or the level
   * filter hides it.
   */
  show(seq: number): boolean {
    const view = this.store.view;
    const index = this.store.indexOf(seq);
    if (view[index]?.seq !== seq || index < this.store.contiguousFrom) return false;
    this.follows = false;
    if (index < this.from || index >= this.to) {
      this.container.replaceChildren();
      this.from = Math.max(this.store.contiguousFrom, index - CHUNK);
      this.to = Math.min(view.length, index + CHUNK);
      this.container.appendChild(rows(view, this.from, this.to));
    }
    const target = this.container.children[index - this.from] as HTMLElement | undefined;
    if (target !== undefined) {
      this.scroller.scrollTop = Math.max(0, target.offsetTop - (this.scroller.clientHeight - target.offsetHeight) / 2);
    }
    this.lastTop = this.scroller.scrollTop;
    this.unseen = view.length - this.to;
    this.report();
    return true;
  }

  private unfollow(): void {
    if (!this.follows) return;
    this.follows = false;
    this.unseen = 0;
    this.report();
  }

  private schedule(): void {
    if (this.frame === 0) this.frame = requestAnimationFrame(() => this.render());
  }

  /** Bring the DOM up to date with the store: once per animation frame at most. */
  private render(): void {
    this.frame = 0;
    const view = this.store.view;
    if (this.follows) {
      if (view.length - this.to > CHUNK) {
        // More than a screenful or two came at once (the first tail, a burst):
        // render the end only; scrolling up renders the rest.
        this.container.replaceChildren();
        this.from = this.to = Math.max(this.store.contiguousFrom, view.length - CHUNK);
      }
      this.container.appendChild(rows(view, this.to, view.length));
      this.to = view.length;
      this.trimTop(this.to - this.from - MAX_ROWS, false);
      this.report();
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else {
      this.unseen = view.length - this.to;
      this.report();
    }
  }

  private scrolled(): void {
    const { scrollTop, scrollHeight, clientHeight } = this.scroller;
    const below = scrollHeight - scrollTop - clientHeight;
    // Only a move up leaves the end: content that grew below does not.
    const up = scrollTop < this.lastTop;
    this.lastTop = scrollTop;
    const view = this.store.view;
    if (below <= 2 && this.to === view.length) {
      if (!this.follows) this.jumpToEnd();
      return;
    }
    if (up && this.follows) this.unfollow();
    if (scrollTop < EDGE * clientHeight && this.from > this.store.contiguousFrom) this.prepend();
    else if (below < EDGE * clientHeight && this.to < view.length) this.append();
  }

  private prepend(): void {
    const from = Math.max(this.store.contiguousFrom, this.from - CHUNK);
    const before = this.scroller.scrollHeight;
    this.container.prepend(rows(this.store.view, from, this.from));
    this.from = from;
    this.scroller.scrollTop += this.scroller.scrollHeight - before; // keep what is on screen in place
    const excess = this.to - this.from - MAX_ROWS;
    for (let i = 0; i < excess; i++) this.container.lastElementChild?.remove();
    if (excess > 0) this.to -= excess;
    this.report();
  }

  private append(): void {
    const to = Math.min(this.store.view.length, this.to + CHUNK);
    this.container.appendChild(rows(this.store.view, this.to, to));
    this.to = to;
    this.trimTop(this.to - this.from - MAX_ROWS, true);
    this.unseen = this.store.view.length - this.to;
    this.report();
  }

  /** Drop `count` rows from the top; with `keep`, without moving what is on screen. */
  private trimTop(count: number, keep: boolean): void {
    if (count <= 0) return;
    const before = this.scroller.scrollHeight;
    for (let i = 0; i < count; i++) this.container.firstElementChild?.remove();
    this.from += count;
    if (keep) this.scroller.scrollTop -= before - this.scroller.scrollHeight;
  }

  /** The sequence number of the first row on screen. */
  private firstVisible(): number | null {
    const top = this.scroller.scrollTop;
    const children = this.container.children;
    let low = 0;
    let high = children.length - 1;
    if (high < 0) return null;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const child = children[middle] as HTMLElement;
      if (child.offsetTop + child.offsetHeight <= top) low = middle + 1;
      else high = middle;
    }
    return Number((children[low] as HTMLElement).dataset.sequence);
  }

  private report(): void {
    this.chrome.following(this.follows, this.unseen);
    this.chrome.above(this.from - this.store.contiguousFrom, this.store.missingEarlier);
  }
}
