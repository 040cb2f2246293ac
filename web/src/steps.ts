// Steps (LogStep in the contract, docs/streaming.md#steps): a line with a
// START step opens a named section, the END line of the same id closes it.
// The structure is derived from the lines in sequence order, by the
// contract's rules: steps nest, ending a step ends those still open inside
// it, an END of a step that is not open (or a START of one that is) is an
// ordinary line, a step holds errors when any line in it is an ERROR.
//
// A step's first line is its header: a fold toggle, its name, its duration
// and an error mark. Steps that ended without an error are folded, the
// others (running, unclosed, or holding an error: the step that failed) are
// open; a click on the header folds or unfolds it. Folding hides the step's
// lines through the store's filter, so the DOM window stays bounded.

import { duration } from "./header.js";
import type { Line, LogStore } from "./store.js";
import { decorators } from "./view.js";

const ERROR = 3;

export interface Step {
  readonly id: string;
  readonly name: string;
  readonly parent: Step | null;
  readonly depth: number;
  readonly startSeq: number;
  readonly startTime: number;
  endSeq: number | null;
  endTime: number | null;
  errors: boolean;
  /** The person's choice, when they clicked; null: the default. */
  chosen: boolean | null;
}

function span(text: string, className: string): HTMLElement {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

/** 350 -> "0.35 s", 73_000 -> "1m 13s". */
export function stepDuration(ms: number): string {
  return ms < 10_000 ? `${(Math.max(0, ms) / 1000).toFixed(2)} s` : duration(ms);
}

export class Steps {
  readonly all: Step[] = [];
  /** The innermost step each line belongs to (a header belongs to its step's parent), by seq - 1. */
  private readonly owner: Array<Step | null> = [];
  private readonly headers = new Map<number, Step>();
  private readonly open: Step[] = [];
  /** The build's finish time (ms) once it finished: an unclosed step ends there. */
  finished: number | null = null;

  constructor(
    private readonly store: LogStore,
    container: HTMLElement,
  ) {
    decorators.push((line, row, body) => this.decorate(line, row, body));
    container.addEventListener("click", (event) => {
      const header = (event.target as HTMLElement).closest<HTMLElement>(".step-header");
      if (header === null) return;
      const step = this.headers.get(Number(header.closest<HTMLElement>(".line")?.dataset.sequence));
      if (step === undefined) return;
      step.chosen = !this.folded(step);
      this.apply();
    });
  }

  folded(step: Step): boolean {
    return step.chosen ?? (step.endSeq !== null && !step.errors);
  }

  /** Take the lines that continue the processed prefix; refold when a step ended or found an error. */
  update(): void {
    const lines = this.store.lines;
    let changed = false;
    for (let i = this.owner.length; i < lines.length && lines[i]!.seq === i + 1; i++) {
      changed = this.take(lines[i]!) || changed;
    }
    if (changed) this.apply();
  }

  /** Unfold the steps around line `seq` (a link to it). */
  reveal(seq: number): void {
    let changed = false;
    for (let step = this.owner[seq - 1] ?? null; step !== null; step = step.parent) {
      if (this.folded(step)) {
        step.chosen = false;
        changed = true;
      }
    }
    if (changed) this.apply();
  }

  private apply(): void {
    this.store.fold(this.all.some((step) => this.folded(step)) ? (line) => this.hidden(line) : null);
  }

  private hidden(line: Line): boolean {
    for (let step = this.owner[line.seq - 1] ?? null; step !== null; step = step.parent) {
      if (this.folded(step)) return true;
    }
    return false;
  }

  /** Process one line; true when the folding may have changed. */
  private take(line: Line): boolean {
    const top = this.open[this.open.length - 1] ?? null;
    const mark = line.step;
    let changed = false;
    if (mark?.start && !this.open.some((step) => step.id === mark.id)) {
      const step: Step = {
        id: mark.id,
        name: mark.name || mark.id,
        parent: top,
        depth: top === null ? 0 : top.depth + 1,
        startSeq: line.seq,
        startTime: line.time,
        endSeq: null,
        endTime: null,
        errors: false,
        chosen: null,
      };
      this.all.push(step);
      this.open.push(step);
      this.headers.set(line.seq, step);
      this.owner.push(top);
      changed = true;
      if (line.level === ERROR) changed = this.error(step) || changed;
      return changed;
    }
    if (mark !== undefined && !mark.start) {
      const index = this.open.findIndex((step) => step.id === mark.id);
      if (index >= 0) {
        const step = this.open[index]!;
        this.owner.push(step);
        if (line.level === ERROR) this.error(step);
        for (const ended of this.open.splice(index)) {
          ended.endSeq = line.seq;
          ended.endTime = line.time;
        }
        return true;
      }
    }
    this.owner.push(top);
    return line.level === ERROR && top !== null ? this.error(top) : false;
  }

  /** Mark `step` and its parents as holding an error; true when one was not yet. */
  private error(step: Step | null): boolean {
    let changed = false;
    for (; step !== null && !step.errors; step = step.parent) {
      step.errors = true;
      changed = true;
    }
    return changed;
  }

  private decorate(line: Line, row: HTMLElement, body: HTMLElement): void {
    const owner = this.owner[line.seq - 1] ?? null;
    const step = this.headers.get(line.seq);
    const depth = step !== undefined ? step.depth : owner === null ? 0 : owner.depth + 1;
    // Indent the message (not the time the times toggle puts before it).
    const indent = depth > 0 ? `${2 * depth}ch` : "";
    if (step === undefined) {
      const message = body.querySelector<HTMLElement>(".message");
      if (message !== null && indent !== "") message.style.marginLeft = indent;
      return;
    }
    const folded = this.folded(step);
    row.classList.add("step-start");
    row.dataset.step = step.id;
    row.dataset.folded = String(folded);
    if (step.errors) row.classList.add("step-errors");
    const header = document.createElement("span");
    header.className = "step-header";
    if (indent !== "") header.style.marginLeft = indent;
    header.append(span(folded ? "▸" : "▾", "step-toggle"), span(step.name, "step-name"));
    const end = step.endTime ?? this.finished;
    header.append(
      span(
        end === null ? "running" : step.endTime === null ? `unclosed · ${stepDuration(end - step.startTime)}` : stepDuration(end - step.startTime),
        "step-duration",
      ),
    );
    if (step.errors) header.append(span("✖ errors", "step-error-mark"));
    body.prepend(header);
  }
}
