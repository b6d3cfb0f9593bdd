// Drives the browser phone in headless Chromium (Debian's, through playwright-core).
//
//   node drive.mjs PAGE_URL WS_URL SIP_URI [PASSWORD]
//
// Prints one JSON line when the phone registered (or failed), then waits for a line
// on stdin and closes the page (and so its WebSocket), prints "closed" and exits.
// Every wait is bounded; the browser is started sandbox-free, as root may need.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [pageUrl, wsUrl, uri, password] = process.argv.slice(2);
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(3); }, 60000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors"],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true });
const page = await context.newPage();
page.on("console", (message) => console.error(`console: ${message.text()}`));
await page.goto(pageUrl);
try {
  const result = await page.evaluate(
    ([url, uri, password]) => window.Phone.register({ url, uri, password: password || undefined }),
    [wsUrl, uri, password],
  );
  console.log(JSON.stringify(result));
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
}
const lines = readline.createInterface({ input: process.stdin });
for await (const _ of lines) break;
await page.close();
console.log("closed");
await browser.close();
clearTimeout(timer);
