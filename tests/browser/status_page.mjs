// Drives one page in headless Chromium (Debian's, through playwright-core) for a test that
// speaks to it in JSON lines:
//
//   node status_page.mjs        then, one request a line on stdin, one answer a line on stdout:
//   {"op": "goto", "url": U}                       load U (a new page each time)
//   {"op": "reload"}                               load the page again
//   {"op": "fill", "selector": S, "text": T}       type T into S
//   {"op": "click", "selector": S}
//   {"op": "until", "js": EXPR, "timeout": MS}     wait until EXPR (in the page) is truthy
//   {"op": "eval", "js": EXPR}                     EXPR's value (JSON)
//   {"op": "screenshot", "path": P}
//   answers: {"ok": true, "value": ...} or {"ok": false, "error": "..."}
//
// Each answer also carries "errors", what the page threw, and "console", what it logged as
// an error and each HTTP error it met (a refused request, say), since the answer before.  Every wait is bounded; the browser runs sandbox-free (root).
import { chromium } from "playwright-core";
import readline from "node:readline";

const LIMIT = 120000;
const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, error: "timeout" })); process.exit(3); }, LIMIT);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
let page = null;
let errors = [], logged = [];

async function goto(url) {
  if (page) await page.close();
  page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => { if (message.type() === "error") logged.push(message.text()); });
  page.on("response", (response) => {
    if (response.status() >= 400) logged.push(`HTTP ${response.status()} ${response.url()}`);
  });
  await page.goto(url);
}

// Polled from here: page.waitForFunction() evaluates with eval(), which the page's
// Content-Security-Policy forbids, as it should.
async function until(js, timeout) {
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(js))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${js}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

const ops = {
  goto: ({ url }) => goto(url),
  reload: () => page.reload(),
  fill: ({ selector, text }) => page.fill(selector, text, { timeout: 10000 }),
  click: ({ selector }) => page.click(selector, { timeout: 10000 }),
  until: ({ js, timeout }) => until(js, timeout || 10000),
  eval: ({ js }) => page.evaluate(js),
  screenshot: ({ path }) => page.screenshot({ path, fullPage: true }).then(() => path),
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const request = JSON.parse(line);
  let answer;
  try {
    answer = { ok: true, value: (await ops[request.op](request)) ?? null };
  } catch (error) {
    answer = { ok: false, error: String(error).split("\n")[0] };
  }
  Object.assign(answer, { errors, console: logged });
  errors = [];
  logged = [];
  console.log(JSON.stringify(answer));
}
await browser.close();
clearTimeout(timer);
