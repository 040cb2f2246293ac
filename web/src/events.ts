// The build's events (StreamBuildEvents with follow) as an activity feed
// beside the log: every event once, in order, across reconnects (a resume
// asks for after_sequence = the last cursor, and an event at or before the
// last one taken is dropped and counted). Each event links to the log lines
// committed around it: the first line at or after its create_time.

import type { BuildEvent } from "@buildplatform/api/web";
import type { Range } from "./links.js";
import type { LogStore } from "./store.js";

/** Lines around an event's first line that its link highlights (before, after). */
const AROUND = 2;

function millis(event: BuildEvent): number {
  const time = event.createTime;
  return time === undefined ? 0 : Number(time.seconds) * 1000 + Math.floor(time.nanos / 1e6);
}

const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

export class EventFeed {
  /** The resume cursor: every event up to it was received. */
  cursor = 0n;
  private last = 0;
  count = 0;
  repeats = 0;

  constructor(
    private readonly list: HTMLElement,
    private readonly store: LogStore,
    private readonly go: (range: Range) => void,
  ) {
    list.addEventListener("click", (event) => {
      const link = (event.target as HTMLElement).closest<HTMLElement>(".event-lines");
      if (link === null) return;
      event.preventDefault();
      this.open(Number(link.dataset.time));
    });
  }

  /** Events of one stream message, in sequence order. */
  add(events: readonly BuildEvent[]): void {
    const fragment = document.createDocumentFragment();
    for (const event of events) {
      const seq = Number(event.sequence);
      if (seq <= this.last) {
        this.repeats++;
        continue;
      }
      this.last = seq;
      this.count++;
      fragment.append(this.item(event));
    }
    const atEnd = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 4;
    this.list.append(fragment);
    if (atEnd) this.list.scrollTop = this.list.scrollHeight;
    this.list.dataset.count = String(this.count);
  }

  /** Jump to the lines committed around `time`. */
  open(time: number): void {
    const line = this.store.firstAtOrAfter(time) ?? this.store.lines[this.store.lines.length - 1];
    if (line === undefined) return;
    this.go({ from: Math.max(1, line.seq - AROUND), to: line.seq + AROUND });
  }

  private item(event: BuildEvent): HTMLElement {
    const time = millis(event);
    const item = document.createElement("li");
    item.className = "event";
    item.dataset.sequence = String(event.sequence);
    const when = document.createElement("time");
    when.textContent = CLOCK.format(time);
    when.title = new Date(time).toISOString();
    const type = document.createElement("span");
    type.className = "event-type";
    type.textContent = event.type;
    const link = document.createElement("a");
    link.className = "event-lines";
    link.href = "#";
    link.dataset.time = String(time);
    link.textContent = "→ log";
    link.title = "The log lines written around this event";
    item.append(when, type, link);
    const data = event.data === undefined ? "" : JSON.stringify(event.data);
    if (data !== "" && data !== "{}") {
      const detail = document.createElement("div");
      detail.className = "event-data";
      detail.textContent = data.length > 300 ? `${data.slice(0, 300)}…` : data;
      detail.title = data.slice(0, 4000);
      item.append(detail);
    }
    return item;
  }
}
