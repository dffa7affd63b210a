// The console's flows in a real browser: Debian's Chromium driven by
// playwright-core (never a downloaded browser). Run by
// tests/tests/browser.rs, which sets the deployment up and checks through
// the API what the clicks recorded. Each step prints one line; a failure
// throws with what was on the page. Screenshots go to MEND_SCREENSHOTS.
//
// Environment: MEND_CONSOLE (http://host:port), MEND_APPROVER_TOKEN,
// MEND_VIEWER_TOKEN, MEND_FIRST (a rename waiting), MEND_SECOND (another
// one, to reject), MEND_SCREENSHOTS (a directory).
import { chromium } from "playwright-core";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("MEND_CONSOLE");
const first = env("MEND_FIRST");
const second = env("MEND_SECOND");
const shots = env("MEND_SCREENSHOTS");
const step = (text) => console.log(`[browser] ${text}`);

// A fresh profile of its own (playwright's temporary user-data dir).
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
// Anything a page's data could make the browser run ends the test.
const alarms = [];
const watch = (page) => {
  page.on("dialog", async (dialog) => {
    alarms.push(`a dialog opened: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on("pageerror", (error) => alarms.push(`a script error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") alarms.push(`console error: ${message.text()}`);
  });
  return page;
};

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  step(`screenshot ${path}`);
}

async function signIn(page, token) {
  await page.goto(`${base}/`);
  await page.waitForURL(/\/console\/login/);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/`);
}

const person = async () => browser.newContext({ viewport: { width: 1280, height: 900 } });

try {
  // A viewer sees the waiting rename with its buttons disabled, and why.
  const viewer = watch(await (await person()).newPage());
  await signIn(viewer, env("MEND_VIEWER_TOKEN"));
  await viewer.goto(`${base}/console/incidents/${first}`);
  if (!(await viewer.locator("form.approve button").isDisabled())) throw new Error("a viewer's approve is enabled");
  const whyNot = await viewer.textContent(".why-not");
  if (!whyNot.includes("needs the approver role")) throw new Error(`no reason given: ${whyNot}`);
  step("a viewer cannot approve, and is told why");
  await shot(viewer, "incident-viewer");

  // The approver: the inbox in one tab, the incident in another.
  const approver = await person();
  const inbox = watch(await approver.newPage());
  await signIn(inbox, env("MEND_APPROVER_TOKEN"));
  const waitingRow = inbox.locator(`.waiting tr[data-incident="${first}"]`);
  await waitingRow.waitFor();
  step("the rename waits in the inbox");
  await inbox.waitForFunction(() => document.body.getAttribute("data-live") === "connected");
  await shot(inbox, "inbox");

  const incident = watch(await approver.newPage());
  await incident.goto(`${base}/`);
  await Promise.all([
    incident.waitForURL(`${base}/console/incidents/${first}`),
    incident.click(`.waiting tr[data-incident="${first}"] a`),
  ]);
  step("opened from the inbox");
  const will = await incident.textContent("form.approve .will");
  if (!/replays \d+ records?/.test(will)) throw new Error(`approve does not say what it does: ${will}`);
  await shot(incident, "incident");
  await Promise.all([incident.waitForURL(`${base}/console/incidents/${first}`), incident.click("form.approve button")]);
  step("approved");

  // The first tab was not reloaded: its row turns healed by itself.
  await inbox
    .locator(`.all tr[data-incident="${first}"] .badge.healed`)
    .waitFor({ timeout: 60_000 });
  if ((await inbox.locator(`.waiting tr[data-incident="${first}"]`).count()) !== 0) {
    throw new Error("the healed incident still waits in the inbox");
  }
  step("the inbox shows it healed without a reload");
  await shot(inbox, "inbox-healed");

  // Reject the second with a reason code and text holding markup.
  await incident.goto(`${base}/console/incidents/${second}`);
  await incident.selectOption("select[name=code]", "wrong_producer");
  await incident.fill("input[name=text]", '<img src=x onerror="alert(1)"><script>alert(2)</script>');
  await Promise.all([incident.waitForURL(`${base}/console/incidents/${second}`), incident.click("form.reject button")]);
  await incident.locator(".decided", { hasText: "rejected by" }).waitFor();
  const decided = await incident.textContent(".decided");
  if (!decided.includes("wrong_producer: <img")) throw new Error(`the reason is not shown as text: ${decided}`);
  step("rejected with a reason; the markup in it shows as text");
  await shot(incident, "incident-rejected");

  // The dataset: its table, history, the diff of its two newest versions,
  // and the time to heal plotted.
  const dataset = env("MEND_DATASET");
  await incident.goto(`${base}/console/datasets`);
  await Promise.all([
    incident.waitForURL(`${base}/console/datasets/${dataset}`),
    incident.click(`tr[data-dataset="${dataset}"] a`),
  ]);
  await incident.locator(".plot svg circle").first().waitFor();
  if ((await incident.locator(".history table.diff tr").count()) < 2) throw new Error("no diff of the two newest versions");
  step("the dataset page plots the time to heal and diffs its versions");
  await shot(incident, "dataset");

  // The audit log: verified from the console; the incident's timeline then
  // carries the verdict.
  await incident.goto(`${base}/console/audit`);
  await Promise.all([incident.waitForURL(`${base}/console/audit`), incident.click("form[action='/console/audit/verify'] button")]);
  await incident.locator(".verify .badge").waitFor();
  const verdict = await incident.textContent(".verify .state");
  if (!verdict.includes("events and")) throw new Error(`no verification shown: ${verdict}`);
  step(`audit: ${verdict.replace(/\s+/g, " ").trim()}`);
  await shot(incident, "audit");
  await incident.goto(`${base}/console/incidents/${first}`);
  await incident.locator(".timeline .badge").waitFor();
  step(`the incident's timeline: ${(await incident.textContent(".timeline .state")).trim()}`);
  await shot(incident, "incident-timeline");

  // Nothing from the data ran on any page.
  for (const page of [inbox, incident, viewer]) {
    const pwned = await page.evaluate(() => window.pwned ?? null);
    if (pwned !== null) alarms.push(`window.pwned was set on ${page.url()}`);
  }
  if (alarms.length) throw new Error(alarms.join("\n"));
  step("no dialog, no script error, nothing from the data ran");
} finally {
  await browser.close();
}
