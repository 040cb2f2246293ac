// Line decorations that are not steps or links: each line's time (a toggle,
// in the viewer's time zone, named beside the toggle, with the time since the
// build started) and a `tool` line's metadata (its command and exit code).

import type { Line } from "./store.js";
import { decorators, type LogView } from "./view.js";

/** The viewer's time zone, as the browser names it (e.g. "Europe/Paris"). */
export const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

const CLOCK = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
  hourCycle: "h23",
});
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });

/** 3_723_400 -> "+1:02:03.4", 2_500 -> "+0:02.5", -500 -> "-0:00.5". */
export function relative(ms: number): string {
  const sign = ms < 0 ? "-" : "+";
  const tenths = Math.floor(Math.abs(ms) / 100);
  const s = Math.floor(tenths / 10);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = `${String(s % 60).padStart(2, "0")}.${tenths % 10}`;
  return h > 0 ? `${sign}${h}:${String(m).padStart(2, "0")}:${sec}` : `${sign}${m}:${sec}`;
}

export class Times {
  private on = false;
  private start: number | null = null;

  constructor(
    private readonly view: LogView,
    toggle: HTMLInputElement,
    zone: HTMLElement,
  ) {
    zone.textContent = ZONE;
    toggle.addEventListener("change", () => {
      this.on = toggle.checked;
      document.body.dataset.times = this.on ? "on" : "off";
      this.view.redraw();
    });
    decorators.push((line, _row, body) => {
      if (this.on) body.prepend(this.time(line));
    });
  }

  /** When the build started (or was created, before it starts): the origin of relative times. */
  buildStarted(ms: number | null): void {
    if (ms === null || ms === this.start) return;
    this.start = ms;
    if (this.on) this.view.redraw();
  }

  private time(line: Line): HTMLElement {
    const element = document.createElement("span");
    element.className = "time";
    element.textContent = CLOCK.format(line.time) + (this.start === null ? "" : ` ${relative(line.time - this.start)}`);
    element.title = `${FULL.format(line.time)} (${ZONE})`;
    return element;
  }
}

function text(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(text).join(" ");
  return JSON.stringify(value) ?? "";
}

/** A line's command and exit code, from its metadata (`command` or `cmd` or `tool`; `exit_code`), compactly after the message. */
export function toolMetadata(): void {
  decorators.push((line, row, body) => {
    const meta = line.metadata;
    if (meta === undefined) return;
    const command = meta["command"] ?? meta["cmd"] ?? meta["tool"];
    const exit = meta["exit_code"] ?? meta["exitCode"];
    if (command === undefined && exit === undefined) return;
    const element = document.createElement("span");
    element.className = "tool-meta";
    if (command !== undefined) {
      const cmd = document.createElement("code");
      cmd.className = "tool-command";
      cmd.textContent = `$ ${text(command)}`;
      element.append(cmd);
    }
    if (exit !== undefined) {
      const code = document.createElement("span");
      code.className = `tool-exit ${Number(exit) === 0 ? "ok" : "failed"}`;
      code.textContent = `exit ${text(exit)}`;
      element.append(code);
      row.dataset.exitCode = text(exit);
    }
    element.title = JSON.stringify(meta);
    body.append(element);
  });
}
