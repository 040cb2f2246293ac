// The search box: SearchBuildLogs on the server, so every line of the log is
// searched (hot or archived), not only the rows drawn; the browser's own find
// reaches only those.
//
// A search asks for sequences and spans only (omit_lines), up to 100,000
// matches per call, and continues from each call's last cursor until the
// server says `done`, so the count has no limit and streams in while the
// server scans. The page keeps every match's sequence (for next/previous)
// and its spans (for the highlight of the rows drawn). Next and previous ask
// the view to show the line, which draws a new window around it however far
// it is from the rows drawn. While the log grows the search goes on over the
// new lines. Enter: next, Shift+Enter: previous, Escape: clear.

import type { BuildPlatformClients } from "@buildplatform/api/web";

/** Matches asked for per call (the server's maximum). */
const PER_CALL = 100_000;
/** Typing settles this long before a search starts. */
const SETTLE_MS = 250;
/** A finished search looks at lines that came since at most this often. */
const FOLLOW_MS = 1000;

/** Byte spans [start, end) of the UTF-8 message -> UTF-16 offsets into the string. */
export function utf16Spans(message: string, spans: readonly (readonly [number, number])[]): [number, number][] {
  if (spans.length === 0) return [];
  const out: [number, number][] = [];
  let byte = 0;
  let unit = 0;
  const at = (target: number): number => {
    while (byte < target && unit < message.length) {
      const code = message.codePointAt(unit)!;
      byte += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
      unit += code >= 0x10000 ? 2 : 1;
    }
    return unit;
  };
  for (const [start, end] of spans) {
    const from = at(start);
    out.push([from, at(end)]);
  }
  return out;
}

export interface SearchTarget {
  /** Draw the window around line `seq` and put it in view; false when the line is not held yet. */
  show(seq: number): boolean;
  /** The search's matches changed: redraw the highlight of the rows drawn. */
  marked(): void;
}

export class LogSearch {
  /** Every match's sequence, in order. */
  private matches: number[] = [];
  private readonly spans = new Map<number, [number, number][]>();
  private current = -1; // index in `matches` of the line shown, -1: none
  private cursor = 0n;
  private running: AbortController | null = null;
  private done = false;
  private failed = "";
  private settle = 0;
  private follow = 0;
  private pending: number | null = null; // a line to show once it is held
  private levels: number[] = [];

  constructor(
    private readonly api: BuildPlatformClients,
    private readonly buildId: string,
    private readonly input: HTMLInputElement,
    private readonly regex: HTMLInputElement,
    private readonly caseSensitive: HTMLInputElement,
    private readonly count: HTMLElement,
    private readonly target: SearchTarget,
    private readonly lastSequence: () => number,
  ) {
    input.addEventListener("input", () => this.restartSoon());
    regex.addEventListener("change", () => this.restart());
    caseSensitive.addEventListener("change", () => this.restart());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        if (this.settle !== 0) this.restart(); // Enter does not wait for typing to settle
        this.step(event.shiftKey ? -1 : 1);
      } else if (event.key === "Escape") {
        event.preventDefault();
        this.clear();
      }
    });
    document.getElementById("search-next")?.addEventListener("click", () => this.step(1));
    document.getElementById("search-previous")?.addEventListener("click", () => this.step(-1));
    // The browser's find reaches only the rows drawn: Ctrl+F (and "/") search the whole log.
    document.addEventListener("keydown", (event) => {
      const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
      if (((event.ctrlKey || event.metaKey) && event.key === "f") || (event.key === "/" && !typing)) {
        event.preventDefault();
        input.focus();
        input.select();
      }
    });
    this.show();
  }

  /** The spans (UTF-16 offsets) to highlight in line `seq`, if it matches. */
  marks(seq: number, message: string): [number, number][] | undefined {
    const spans = this.spans.get(seq);
    return spans === undefined ? undefined : utf16Spans(message, spans);
  }

  /** The line next/previous last showed. */
  get currentSequence(): number | null {
    return this.current >= 0 ? (this.matches[this.current] ?? null) : null;
  }

  /** Search only these levels (the level filter's; empty: all). */
  setLevels(levels: number[]): void {
    this.levels = levels;
    if (this.input.value !== "") this.restart();
  }

  /** New lines were held: a finished search looks at them; a pending jump may be possible now. */
  held(): void {
    if (this.pending !== null && this.target.show(this.pending)) this.pending = null;
    if (this.done && this.follow === 0 && this.input.value !== "" && this.lastSequence() > Number(this.cursor)) {
      this.follow = window.setTimeout(() => {
        this.follow = 0;
        if (this.done) void this.run(this.running ?? new AbortController(), false);
      }, FOLLOW_MS);
    }
  }

  private restartSoon(): void {
    window.clearTimeout(this.settle);
    this.settle = window.setTimeout(() => this.restart(), SETTLE_MS);
  }

  private restart(): void {
    window.clearTimeout(this.settle);
    this.settle = 0;
    window.clearTimeout(this.follow);
    this.follow = 0;
    this.running?.abort();
    this.running = null;
    this.matches = [];
    this.spans.clear();
    this.current = -1;
    this.cursor = 0n;
    this.done = false;
    this.failed = "";
    this.pending = null;
    this.target.marked();
    if (this.input.value === "") {
      this.show();
      return;
    }
    const control = new AbortController();
    this.running = control;
    void this.run(control, true);
  }

  private clear(): void {
    this.input.value = "";
    this.restart();
    this.input.blur();
  }

  /** Calls until the server says done, each from the last cursor. */
  private async run(control: AbortController, first: boolean): Promise<void> {
    this.done = false;
    this.show();
    try {
      for (;;) {
        let last = null;
        const request = {
          buildId: this.buildId,
          query: this.input.value,
          regex: this.regex.checked,
          ignoreCase: !this.caseSensitive.checked,
          levels: this.levels,
          afterSequence: this.cursor,
          maxMatches: PER_CALL,
          omitLines: true,
        };
        for await (const response of this.api.buildLogs.searchBuildLogs(request, { signal: control.signal })) {
          if (control.signal.aborted) return;
          for (const hit of response.hits) {
            if (hit.context) continue;
            const seq = Number(hit.sequence);
            this.matches.push(seq);
            this.spans.set(seq, hit.spans.map((span) => [span.start, span.end]));
          }
          this.cursor = response.cursor;
          last = response;
          this.target.marked();
          // The first match found becomes the current one.
          if (first && this.current < 0 && this.matches.length > 0) this.step(1);
          this.show();
        }
        if (last === null || last.done) break;
      }
      this.done = true;
    } catch (error) {
      if (control.signal.aborted) return;
      this.failed = error instanceof Error ? error.message.replace(/^\[\w+\] /, "") : String(error);
    }
    this.show();
  }

  /** Next (+1) or previous (-1) match, around the ends. */
  private step(direction: 1 | -1): void {
    const total = this.matches.length;
    if (total === 0) return;
    this.current = this.current < 0 ? (direction > 0 ? 0 : total - 1) : (this.current + direction + total) % total;
    const seq = this.matches[this.current]!;
    this.pending = this.target.show(seq) ? null : seq;
    this.target.marked();
    this.show();
  }

  private show(): void {
    const total = this.matches.length;
    let text: string;
    if (this.failed !== "") text = this.failed;
    else if (this.input.value === "") text = "";
    else if (total === 0) text = this.done ? "no matches" : "searching…";
    else {
      const position = this.current >= 0 ? `${(this.current + 1).toLocaleString()} of ` : "";
      text = `${position}${total.toLocaleString()}${this.done ? "" : "+ (searching…)"} ${total === 1 ? "match" : "matches"}`;
    }
    this.count.textContent = text;
    this.count.dataset.state =
      this.failed !== "" ? "failed" : this.input.value === "" ? "idle" : this.done ? "done" : "searching";
    this.count.dataset.total = String(total);
  }
}
