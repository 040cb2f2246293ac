// A real Chromium for the Python tests, driven over stdin/stdout: one JSON
// request per line in, one JSON answer per line out (tests/e2e/browser.py).
// playwright-core drives Debian's chromium (CHROMIUM, /usr/bin/chromium by
// default); Playwright's own browser download is never used.
//
//   {"id": 1, "op": "open", "url": "http://..."}                 -> {"id": 1, "ok": true}
//   {"id": 2, "op": "evaluate", "source": "(arg) => ...", "arg": ...} -> {"id": 2, "ok": true, "value": ...}
//   {"id": 3, "op": "wait", "source": "(arg) => ...", "arg": ..., "timeout": 30000}
//   {"id": 4, "op": "wheel", "dy": -800}        a person's scroll, over the log
//   {"id": 5, "op": "click", "selector": "#jump"}
//   {"id": 6, "op": "screenshot", "path": "..."}
//   {"id": 7, "op": "metrics"}                  Chromium's own counters (heap, DOM nodes)
//   {"id": 8, "op": "errors"}                   uncaught page errors and console errors so far
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

const ops = {
  async open({ url, html }) {
    if (page) await page.close();
    page = await context.newPage();
    errors = [];
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
    page.on("console", (message) => message.type() === "error" && errors.push(`console: ${message.text()}`));
    if (html !== undefined) await page.setContent(html);
    else await page.goto(url);
  },
  evaluate: ({ source, arg }) => page.evaluate(fn(source), arg),
  async wait({ source, arg, timeout }) {
    await page.waitForFunction(fn(source), arg, { timeout, polling: 50 });
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
    await session.send("Performance.enable");
    const { metrics } = await session.send("Performance.getMetrics");
    await session.detach();
    return Object.fromEntries(metrics.map(({ name, value }) => [name, value]));
  },
  errors: () => errors,
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
