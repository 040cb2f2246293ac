// The live build log page, /builds/<id> on the server's HTTP port.
//
// Four streams, each resumed on its own after any failure (resume.ts):
// - WatchBuild: the build's status, timings and review gate (header.ts);
// - StreamBuildLogs with follow, opened with tail_lines so that the end of
//   a long log paints at once, then resumed with after_sequence = its cursor;
// - StreamBuildLogs without follow from the log's start, for the lines before
//   that tail, stopped once it reaches them (the store joins the two runs);
// - StreamBuildEvents with follow, the activity feed beside the log (events.ts).
// Links to lines, steps, times and tool metadata decorate the rows (links.ts,
// steps.ts, times.ts); the review form answers the gate (review.ts).

import { LogStepAction, connectBuildPlatformWeb, type Build, type BuildLog } from "@buildplatform/api/web";
import { Credential } from "./credential.js";
import { enableDownload } from "./download.js";
import { EventFeed } from "./events.js";
import { expiredText, logsExpired } from "./expired.js";
import { BuildHeader } from "./header.js";
import { Links, parseTarget } from "./links.js";
import { keepStreaming, type Health } from "./resume.js";
import { LogSearch } from "./search.js";
import { LogStore, type Line } from "./store.js";
import { ReviewForm } from "./review.js";
import { Steps } from "./steps.js";
import { Times, toolMetadata } from "./times.js";
import { LEVEL_NAMES, LogView } from "./view.js";

/** Lines of the tail the page asks for first. */
const TAIL_LINES = 1000;

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

function millis(time: { seconds: bigint; nanos: number } | undefined): number | null {
  return time === undefined ? null : Number(time.seconds) * 1000 + Math.floor(time.nanos / 1e6);
}

function line(log: BuildLog): Line {
  const step = log.step;
  return {
    seq: Number(log.sequence),
    level: log.level,
    message: log.message,
    time: millis(log.createTime) ?? 0,
    ...(log.metadata === undefined ? {} : { metadata: log.metadata }),
    ...(step === undefined ? {} : { step: { id: step.id, name: step.name, start: step.action === LogStepAction.START } }),
  };
}

function problem(text: string): void {
  const box = element("problem");
  box.textContent = text;
  box.hidden = false;
}

/**
 * The connection indicator, in words, and `data-connection` on the body:
 * connecting, live, reconnecting, done, failed (given up: the words say why),
 * or waiting (for a token from the embedding page).
 */
function say(state: Health["state"] | "waiting", text: string): void {
  document.body.dataset.connection = state;
  const indicator = element("connection");
  indicator.dataset.state = state;
  indicator.textContent = text;
}

/** The page cannot go on: the problem box says what to do, the indicator and the badge say that nothing is shown. */
function stopped(text: string, why: string, header: BuildHeader | null): void {
  problem(text);
  say("failed", `not connected: ${why}`);
  element("above").textContent = `no lines shown: ${why}`;
  if (header !== null) header.unknown(why);
  else element("status").textContent = "status unknown";
}

/** The connection indicator: the worst health of the page's streams. */
class Connection {
  private readonly healths = new Map<string, Health>();

  constructor() {
    setInterval(() => this.show(), 1000); // the reconnect countdown
  }

  set(stream: string, health: Health): void {
    this.healths.set(stream, health);
    this.show();
  }

  private show(): void {
    const order = ["failed", "reconnecting", "connecting", "live", "done"];
    const worst = [...this.healths.values()].sort((a, b) => order.indexOf(a.state) - order.indexOf(b.state))[0];
    if (worst === undefined) return;
    switch (worst.state) {
      case "connecting":
        return say("connecting", "connecting…");
      case "live":
        return say("live", "live");
      case "reconnecting": {
        const seconds = Math.max(0, Math.ceil((worst.at - Date.now()) / 1000));
        return say(
          "reconnecting",
          `reconnecting${seconds > 0 ? ` in ${seconds} s` : "…"} (attempt ${worst.attempt}: ${worst.reason})`,
        );
      }
      case "done":
        return say("done", "build ended · log complete");
      case "failed":
        return say("failed", worst.reason);
    }
  }
}

function levelFilter(store: LogStore, changed: (levels: number[]) => void): () => void {
  const boxes = [...element("levels").querySelectorAll<HTMLInputElement>("input[type=checkbox]")];
  const apply = () => {
    const wanted = boxes.filter((box) => box.checked).map((box) => Number(box.value));
    store.filter(wanted.length === boxes.length ? null : new Set(wanted));
    changed(wanted.length === boxes.length ? [] : wanted);
  };
  for (const box of boxes) box.addEventListener("change", apply);
  // The counts beside the boxes.
  return () => {
    for (const box of boxes) {
      const count = box.parentElement?.querySelector(".count");
      if (count) count.textContent = (store.counts.get(Number(box.value)) ?? 0).toLocaleString();
    }
  };
}

async function main(): Promise<void> {
  const match = /^\/builds\/([A-Za-z0-9_-]{1,64})$/.exec(location.pathname);
  if (match === null) {
    return stopped("This page shows a build: open /builds/<build id>.", "no build id in the address", null);
  }
  const buildId = match[1]!;
  const header = new BuildHeader(buildId);
  failedHeader = header;

  const target = parseTarget(location.hash); // read before the credential clears the fragment
  const credential = new Credential();
  if (credential.source === null) {
    return stopped(
      "No token: open this page as /builds/<id>#token=<token> (with `make run`, the token is in .data/admin-token), " +
        "or embed it and post the token to it (docs/log-page.md).",
      "no token",
      header,
    );
  }
  if (credential.current() === "") {
    say("waiting", "waiting for a token from the embedding page…");
    header.unknown("no token yet");
    element("above").textContent = "no lines shown until the embedding page gives a token";
  }
  await credential.ready();
  const api = connectBuildPlatformWeb(location.origin, { token: credential.current });
  enableDownload({
    buildId,
    token: credential.current,
    renew: () => credential.renew(),
    button: element<HTMLButtonElement>("download"),
    keepAnsi: element<HTMLInputElement>("download-ansi"),
    problem,
  });

  const store = new LogStore();
  const connection = new Connection();
  let search: LogSearch | null = null;
  const counts = levelFilter(store, (levels) => search?.setLevels(levels));
  const jump = element<HTMLButtonElement>("jump");
  const above = element("above");
  let tailed = false; // the first answer of the follow stream came
  const emptyLog = () =>
    !tailed ? "loading the log…" : header.ended ? "the log is empty" : "no lines yet: they appear here as the build writes them";
  const view = new LogView(element("log"), element("lines"), store, {
    following(follows, unseen) {
      jump.hidden = follows;
      jump.textContent = unseen > 0 ? `↓ ${unseen.toLocaleString()} new lines · follow` : "↓ follow the end";
      counts();
      element("total").textContent = store.size.toLocaleString();
    },
    above(hidden, loading) {
      above.textContent =
        store.size === 0
          ? emptyLog()
          : loading > 0
          ? `loading ${loading.toLocaleString()} earlier lines…`
          : hidden > 0
            ? `↑ ${hidden.toLocaleString()} earlier lines (Home: the start, End: the end)`
            : "start of the log";
    },
  });
  jump.addEventListener("click", () => view.jumpToEnd());
  const found = new LogSearch(
    api,
    buildId,
    element<HTMLInputElement>("search-input"),
    element<HTMLInputElement>("search-regex"),
    element<HTMLInputElement>("search-case"),
    element("search-count"),
    { show: (seq) => view.show(seq), marked: () => view.marked() },
    () => Math.max(store.headCursor, store.view.at(-1)?.seq ?? 0),
  );
  search = found;
  view.setHighlight(found);
  store.listen({ inserted: () => found.held(), appended: () => found.held(), reset: () => found.held() });
  // Steps, links, times, tool metadata: decorations of the rows (steps.ts, links.ts, times.ts).
  const lines = element("lines");
  const steps = new Steps(store, lines);
  const links = new Links(view, store, lines, (seq) => steps.reveal(seq));
  const times = new Times(view, element<HTMLInputElement>("times"), element("zone"));
  toolMetadata();
  const arrived = () => {
    steps.update();
    links.arrived();
  };
  const review = new ReviewForm(element("review"), api.builds);
  const feed = new EventFeed(element("events"), store, (range) => links.go(range));
  if (target !== null) links.go(target);
  // A mark once the next frame (with what was just received) is rendered.
  const painted = (name: string) => requestAnimationFrame(() => setTimeout(() => performance.mark(name)));

  let shown: Build | undefined;
  let expiredAt: Date | null = null;
  // Said again when the build (its finish time) arrives after the refusal.
  const sayExpired = () => {
    if (expiredAt === null) return;
    const finish = shown?.finishTime;
    const finished = finish === undefined ? null : new Date(Number(finish.seconds) * 1000);
    const notice = element("expired");
    notice.textContent = expiredText(expiredAt, finished);
    notice.hidden = false;
    document.body.dataset.logs = "expired";
    above.textContent = "";
  };
  // The log streams end with LOGS_EXPIRED when the build's logs passed their retention.
  const logHealth = (stream: string) => (health: Health) => {
    const expired = health.state === "failed" && health.error ? logsExpired(health.error) : null;
    if (expired === null) {
      connection.set(stream, health);
      if (stream === "log" && health.state === "failed" && store.size === 0) {
        above.textContent = `no lines shown: ${health.reason}`;
      }
      return;
    }
    expiredAt = expired;
    sayExpired();
    connection.set(stream, { state: "failed", reason: "logs expired" });
  };

  const watching = keepStreaming({
    async attempt(signal, alive) {
      for await (const { build } of api.builds.watchBuild({ id: buildId }, { signal })) {
        alive();
        if (build) {
          shown = build;
          header.show(build);
          review.show(build);
          times.buildStarted(millis(build.startTime) ?? millis(build.createTime));
          const finished = millis(build.finishTime);
          if (finished !== steps.finished) {
            steps.finished = finished;
            view.redraw();
          }
          sayExpired();
        }
      }
    },
    health: (health) => {
      connection.set("build", health);
      if (health.state === "failed") header.unknown(health.reason);
    },
    renewCredential: () => credential.renew(),
  });

  let history: Promise<void> | null = null;
  const readHistory = () =>
    keepStreaming({
      async attempt(signal, alive) {
        if (store.missingEarlier === 0) return;
        const request = { buildId, afterSequence: BigInt(store.headCursor) };
        for await (const { logs } of api.buildLogs.streamBuildLogs(request, { signal })) {
          alive();
          store.addHead(logs.map(line));
          arrived();
          if (store.missingEarlier === 0) break; // the rest is the tail's
        }
      },
      health: logHealth("history"),
      renewCredential: () => credential.renew(),
    }).then(() => {
      painted("log-complete");
    });

  let cursor: bigint | null = null; // of the follow stream: every line up to it was received
  const following = keepStreaming({
    async attempt(signal, alive) {
      const request =
        cursor === null
          ? { buildId, follow: true, tailLines: TAIL_LINES }
          : { buildId, follow: true, afterSequence: cursor };
      for await (const response of api.buildLogs.streamBuildLogs(request, { signal })) {
        alive();
        if (cursor === null) {
          const first = response.logs[0];
          store.startTail(first === undefined ? Number(response.cursor) : Number(first.sequence) - 1);
          tailed = true;
          store.addTail(response.logs.map(line));
          arrived();
          if (store.size === 0) above.textContent = emptyLog();
          painted("tail-painted");
          history = store.missingEarlier > 0 ? readHistory() : null;
          if (history === null) painted("log-complete");
        } else {
          store.addTail(response.logs.map(line));
          arrived();
        }
        cursor = response.cursor;
      }
    },
    health: logHealth("log"),
    renewCredential: () => credential.renew(),
  });

  const events = keepStreaming({
    async attempt(signal, alive) {
      const request = { buildId, follow: true, afterSequence: feed.cursor };
      for await (const response of api.buildEvents.streamBuildEvents(request, { signal })) {
        alive();
        feed.add(response.events);
        feed.cursor = response.cursor;
      }
    },
    health: logHealth("events"),
    renewCredential: () => credential.renew(),
  });

  // For the tests and measurements: what the page holds.
  Object.assign(window, {
    buildLog: {
      store,
      search: found,
      get following() {
        return view.following;
      },
      LEVEL_NAMES,
      steps,
      feed,
      links,
    },
  });
  await Promise.all([watching, following, events]);
  await history;
}

let failedHeader: BuildHeader | null = null;
main().catch((error: unknown) => stopped(`The page failed: ${String(error)}`, "the page failed", failedHeader));
