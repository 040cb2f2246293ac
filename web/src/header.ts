// The build's status, timings and review gate, as WatchBuild reports them.

import { BuildStatus, ReviewDecision, type Build } from "@buildplatform/api/web";

type Timestamp = NonNullable<Build["createTime"]>;

const TERMINAL = new Set([BuildStatus.COMPLETED, BuildStatus.FAILED, BuildStatus.CANCELLED]);
const GATES: Partial<Record<BuildStatus, string>> = {
  [BuildStatus.AWAITING_DESIGN_REVIEW]: "design review",
  [BuildStatus.AWAITING_FEATURE_REVIEW]: "feature review",
};

function millis(time: Timestamp | undefined): number | null {
  return time === undefined ? null : Number(time.seconds) * 1000 + Math.floor(time.nanos / 1e6);
}

/** 73_000 -> "1m 13s". */
export function duration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h}h ${m}m ${s}s` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

function clock(ms: number | null): string {
  return ms === null ? "–" : new Date(ms).toLocaleString();
}

function words(name: string): string {
  return name.toLowerCase().replaceAll("_", " ");
}

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing from the page`);
  return found;
}

export class BuildHeader {
  private build: Build | null = null;
  private readonly status = element("status");
  private readonly created = element("created");
  private readonly started = element("started");
  private readonly finished = element("finished");
  private readonly elapsed = element("elapsed");
  private readonly gate = element("gate");
  private readonly reason = element("reason");
  private readonly reviews = element("reviews");

  constructor(buildId: string) {
    element("build-id").textContent = buildId;
    setInterval(() => this.tick(), 1000);
  }

  /** The status cannot be read (`why`): the badge says so, instead of "loading…"; a status once shown stays. */
  unknown(why: string): void {
    if (this.build !== null) return;
    this.status.textContent = "status unknown";
    this.status.dataset.status = "UNKNOWN";
    this.status.title = why;
  }

  get ended(): boolean {
    return this.build !== null && TERMINAL.has(this.build.status);
  }

  show(build: Build): void {
    this.build = build;
    const name = BuildStatus[build.status] ?? String(build.status);
    this.status.textContent = words(name);
    this.status.dataset.status = name;
    this.status.removeAttribute("title");
    document.title = `${words(name)} · build ${build.id}`;
    this.created.textContent = clock(millis(build.createTime));
    this.started.textContent = clock(millis(build.startTime));
    this.finished.textContent = clock(millis(build.finishTime));

    const gate = GATES[build.status];
    this.gate.hidden = gate === undefined;
    if (gate !== undefined) {
      const since = millis(build.updateTime);
      this.gate.textContent = `Waiting for ${gate}` + (since === null ? "" : ` since ${new Date(since).toLocaleTimeString()}`);
    }
    this.reason.hidden = build.statusReason === "";
    this.reason.textContent = build.statusReason;

    this.reviews.replaceChildren(
      ...build.reviews.map((review) => {
        const item = document.createElement("li");
        const gateName = GATES[review.gate] ?? words(BuildStatus[review.gate] ?? "");
        const decision = words(ReviewDecision[review.decision] ?? "");
        item.textContent =
          `${gateName}: ${decision}` +
          (review.reviewer ? ` by ${review.reviewer}` : "") +
          (review.comment ? ` — “${review.comment}”` : "");
        return item;
      }),
    );
    this.reviews.hidden = build.reviews.length === 0;
    this.tick();
  }

  /** The running time: from start to finish, or to now while the build runs. */
  private tick(): void {
    if (this.build === null) return;
    const start = millis(this.build.startTime);
    const end = millis(this.build.finishTime) ?? (this.ended ? null : Date.now());
    this.elapsed.textContent = start === null ? "not started" : end === null ? "–" : duration(end - start);
  }
}
