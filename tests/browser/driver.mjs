// A real Chromium for the Python tests, driven over stdin/stdout: one JSON
// request per line in, one JSON answer per line out (tests/e2e/browser.py).
// playwright-core drives Debian's chromium (CHROMIUM, /usr/bin/chromium by
// default); Playwright's own browser download is never used.
//
//   {"id": 1, "op": "open", "url": "http://...", "init": "..."}  -> {"id": 1, "ok": true}
//        (init: a script run in the page before its own, such as a PerformanceObserver)
//   {"id": 2, "op": "evaluate", "source": "(arg) => ...", "arg": ...} -> {"id": 2, "ok": true, "value": ...}
//   {"id": 3, "op": "wait", "source": "(arg) => ...", "arg": ..., "timeout": 30000}
//        (both take "frame": a part of the URL of the frame to run in, such as an iframe's)
//   {"id": 4, "op": "wheel", "dy": -800}        a person's scroll, over the log
//   {"id": 5, "op": "click", "selector": "#jump"}
//   {"id": 6, "op": "screenshot", "path": "..."}
//   {"id": 7, "op": "metrics"}                  Chromium's own counters (heap, DOM nodes), after a garbage collection
//   {"id": 8, "op": "errors"}                   uncaught page errors and console errors so far
//   {"id": 9, "op": "download", "selector": "#download", "path": "...", "timeout": 30000}
//        click, wait for the download it starts, save it at path -> {"filename", "failure"}
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root, Chromium needs --no-sandbox; the pages it opens are the tests' own.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
let page = null;
let errors = [];

// Playwright sends a function's source to the page through the DevTools
// protocol, which the page's Content-Security-Policy does not govern (eval does).
const fn = (source) => new Function("arg", `return (${source})(arg);`);

function within(frame) {
  if (!frame) return page;
  const found = page.frames().find((candidate) => candidate.url().includes(frame));
  if (!found) throw new Error(`no frame at ${frame} (frames: ${page.frames().map((f) => f.url()).join(", ")})`);
  return found;
}

const ops = {
  async open({ url, html, init }) {
    if (page) await page.close();
    page = await context.newPage();
    if (init) await page.addInitScript(init);
    errors = [];
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
    page.on("console", (message) => message.type() === "error" && errors.push(`console: ${message.text()}`));
    if (html !== undefined) await page.setContent(html);
    else await page.goto(url);
  },
  evaluate: ({ source, arg, frame }) => within(frame).evaluate(fn(source), arg),
  async wait({ source, arg, timeout, frame }) {
    await within(frame).waitForFunction(fn(source), arg, { timeout, polling: 50 });
  },
  async wheel({ dy }) {
    await page.mouse.move(640, 600);
    await page.mouse.wheel(0, dy);
  },
  click: ({ selector }) => page.click(selector),
  async screenshot({ path }) {
    await page.screenshot({ path });
  },
  async metrics() {
    const session = await context.newCDPSession(page);
    await session.send("HeapProfiler.collectGarbage");
    await session.send("Performance.enable");
    const { metrics } = await session.send("Performance.getMetrics");
    await session.detach();
    return Object.fromEntries(metrics.map(({ name, value }) => [name, value]));
  },
  errors: () => errors,
  async download({ selector, path, timeout }) {
    const [download] = await Promise.all([page.waitForEvent("download", { timeout }), page.click(selector)]);
    await download.saveAs(path);
    return { filename: download.suggestedFilename(), failure: await download.failure() };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { id, op, ...args } = JSON.parse(line);
  try {
    if (page === null && op !== "open") throw new Error(`${op} before open`);
    const value = await ops[op](args);
    process.stdout.write(JSON.stringify({ id, ok: true, value: value ?? null }) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ id, ok: false, error: String(error?.stack ?? error) }) + "\n");
  }
}
await browser.close();
