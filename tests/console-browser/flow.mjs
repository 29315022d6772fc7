// The web console in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// the acceptance flow of issue 17, one phase per person, started by tests/console.rs (which runs
// cockpit, the fake provider and decides who the provider logs in next).
//
//   node flow.mjs '{"phase": "admin"|"viewer"|"measure", "base": "http://127.0.0.1:PORT",
//                   "git": "/path/to/git/repo", "shots": "/path/to/dir", "pages": [...]}'
//
// Screenshots of each page go to `shots`; `measure` prints one JSON line per page: bytes
// transferred and time to load on a first visit (empty cache). Exits non-zero on any failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const job = JSON.parse(process.argv[2]);
const { base, shots } = job;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const timeout = 20_000;

function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

/** A new phone-or-desktop sized page, confirm dialogs accepted. */
async function newPage(viewport = { width: 1024, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("dialog", (dialog) => dialog.accept());
  return page;
}

/** Logs in through cockpit's OAuth server (the fake provider approves at once). */
async function login(page, name) {
  await page.goto(`${base}/console`);
  check(page.url().startsWith(`${base}/console/login`), "anonymous users are sent to log in");
  if (name) await shot(page, name);
  await page.getByRole("link", { name: /Log in with/ }).click();
  await page.waitForURL(`${base}/console`);
}

const bad = "node__a:\n  port: 2\nbad key: 1\nactions:\n  - action: install\n    recurring: nope\n";
const good = "node__a:\n  port: 2\nactions:\n  - action: install\n";

async function admin() {
  const page = await newPage();
  await login(page, "01-login");
  await shot(page, "02-repositories");
  await page.fill("input[name=name]", "demo");
  await page.fill("input[name=git_url]", job.git);
  await page.getByRole("button", { name: "Create" }).click();
  await page.waitForURL(`${base}/console/repos/demo`);
  await shot(page, "03-repository");

  // An invalid blueprint: Check lists its problems with their lines; Save refuses it.
  await page.getByRole("link", { name: "New blueprint" }).click();
  await page.fill("input[name=name]", "web.yaml");
  await page.fill("textarea[name=content]", bad);
  await page.getByRole("button", { name: "Check" }).click();
  await page.locator("#problems li[data-line='3']").waitFor();
  await page.locator("#problems li[data-line='6']").waitFor();
  await shot(page, "04-blueprint-problems");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#problems li", { hasText: "needs to be actor__instance" }).waitFor();
  // Fixed, checked, saved and executed.
  await page.fill("textarea[name=content]", good);
  await page.getByRole("button", { name: "Check" }).click();
  await page.locator("#problems", { hasText: "No problems." }).waitFor();
  await page.getByRole("button", { name: "Save" }).click();
  await page.waitForURL(`${base}/console/repos/demo/blueprints/web.yaml`);
  await page.getByRole("button", { name: "Execute" }).click();
  await page.locator(".note", { hasText: "Executed: 1 service" }).waitFor();
  await shot(page, "05-blueprint-executed");

  // A run whose log arrives live, while it runs.
  await page.goto(`${base}/console/repos/demo`);
  await page.getByRole("button", { name: "Start a run" }).click();
  await page.waitForURL(/\/runs\/[0-9a-f]+$/);
  await page.locator("pre#log[data-stream]", { hasText: "line 1" }).waitFor();
  check(
    (await page.locator(".badge.running, .badge.new").count()) > 0,
    "the log streams while the run runs",
  );
  await shot(page, "06-run-live");
  // At its end the page reloads with the whole log and Re-run.
  await page.getByRole("button", { name: "Re-run" }).waitFor({ timeout: 60_000 });
  await shot(page, "07-run-ended");

  // Another run, cancelled from its page.
  await page.getByRole("button", { name: "Re-run" }).click();
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.locator(".badge.cancelled").first().waitFor();
  await shot(page, "08-run-cancelled");

  await page.goto(`${base}/console/repos/demo/runs`);
  await shot(page, "09-runs");
  await page.goto(`${base}/console/repos/demo/services`);
  await shot(page, "10-services");
  await page.goto(`${base}/console/repos/demo/services/node/a`);
  await shot(page, "11-service");
  await page.goto(`${base}/console/repos/demo/graph`);
  await page.locator("svg.graph").waitFor();
  await shot(page, "11b-service-graph");
  await page.goto(`${base}/console/repos/demo/templates`);
  await shot(page, "11c-templates");
  await page.goto(`${base}/console/audit`);
  await shot(page, "11d-audit");
  // The same on a phone-sized screen: nothing wider than the screen.
  const phone = await newPage({ width: 375, height: 740 });
  await phone.context().addCookies(await page.context().cookies());
  await phone.goto(`${base}/console/repos/demo`);
  const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 375, `the repository page fits a phone (scroll width ${wide})`);
  await shot(phone, "12-phone-repository");
}

async function viewer() {
  const page = await newPage();
  await login(page, null);
  check((await page.getByText("github:vera · viewer").count()) === 1, "logged in as the viewer");
  check((await page.getByRole("button", { name: "Delete" }).count()) === 0, "no Delete button");
  await shot(page, "13-viewer");
  // Forcing the route: refused.
  const status = await page.evaluate(async () => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const response = await fetch("/console/repos/demo/delete", {
      method: "POST",
      body: new URLSearchParams({ csrf }),
    });
    return response.status;
  });
  check(status === 403, `the forced delete is refused (got ${status})`);
  await page.goto(`${base}/console`);
  check((await page.getByText("demo").count()) > 0, "the repository is still there");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(`${base}/console/login`);
  await shot(page, "14-logged-out");
  await page.goto(`${base}/console`);
  check(page.url().startsWith(`${base}/console/login`), "logged out for good");
}

/** One first visit (empty cache) of `path`: bytes transferred, requests, time to load. */
async function visit(cookies, path, screenshot) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 800 } });
  await context.addCookies(cookies);
  const page = await context.newPage();
  const requests = [];
  page.on("requestfinished", (request) => requests.push(request));
  const response = await page.goto(`${base}${path}`, { waitUntil: "load" });
  check(response.status() === 200, `${path} answers 200 (got ${response.status()})`);
  let bytes = 0;
  for (const request of requests) {
    const sizes = await request.sizes();
    bytes += sizes.responseBodySize + sizes.responseHeadersSize;
  }
  const load = await page.evaluate(() => performance.getEntriesByType("navigation")[0].loadEventEnd);
  if (screenshot) {
    const name = path.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "");
    await page.screenshot({ path: `${shots}/measure-${name}.png` });
  }
  await context.close();
  return { bytes, requests: requests.length, load };
}

/** First visits of each page, three times each (a fresh context: empty cache); the median
 * time to load, since the machine is shared. */
async function measure() {
  const first = await newPage();
  await login(first, null);
  const cookies = await first.context().cookies();
  for (const path of job.pages) {
    const visits = [];
    for (let i = 0; i < 3; i++) visits.push(await visit(cookies, path, i === 0));
    const loads = visits.map((v) => v.load).sort((a, b) => a - b);
    console.log(JSON.stringify({
      path,
      bytes: visits[0].bytes,
      requests: visits[0].requests,
      load_ms: loads[1],
      loads_ms: loads,
    }));
  }
}

try {
  if (job.phase === "admin") await admin();
  else if (job.phase === "viewer") await viewer();
  else if (job.phase === "measure") await measure();
  else throw new Error("unknown phase " + job.phase);
} catch (err) {
  console.error(err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
