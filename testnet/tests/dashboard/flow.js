// The buyer's browser flow against a live testnet, driven by playwright-core in Debian's headless Chromium.
// Run by testnet/tests/dashboard.rs, which passes the dashboard link, the buyer's SSH key and where to put the
// screenshots, reads the lines this prints (LEASE, PAID, VM) and mines the confirming block after PAID.
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const url = process.env.XOV_DASHBOARD_URL;
const sshKey = process.env.XOV_SSH_KEY;
const shots = process.env.XOV_SHOTS;
const fail = (m) => { throw new Error(m); };

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => console.error(`browser console: ${m.text()}`));
    // Count the page's API reads, to show the machine's address arrives by the event stream, not by polling.
    await page.addInitScript(() => {
      window.__reads = [];
      const f = window.fetch;
      window.fetch = (p, i) => { window.__reads.push(String(p)); return f(p, i); };
    });

    // The one-time link logs in (cookie) and redirects to a clean URL.
    await page.goto(url);
    if (page.url().includes("code=")) fail(`login code still in the address bar: ${page.url()}`);
    await page.waitForSelector("#live.on", { timeout: 30000 });
    await page.waitForSelector("#offers-table tbody tr", { timeout: 60000 });
    await page.screenshot({ path: `${shots}/1-offers.png`, fullPage: true });

    // Order the cheapest offer.
    await page.click("#offers-table tbody tr:first-child button.order");
    await page.fill("#order-ssh-key", sshKey);
    await page.fill("#order-hours", "1");
    await page.click("#order-submit");
    await page.waitForFunction(() => document.querySelector("#invoice-uri").textContent.startsWith("bitcoin:"), null, { timeout: 60000 });
    await page.waitForFunction(() => { const i = document.querySelector("#invoice-qr"); return i.complete && i.naturalWidth > 0; }, null, { timeout: 10000 });
    // The new lease is in the list at once (not only after the next event) and is the one the invoice shows.
    const lease = await page.evaluate(() => document.querySelector("#invoice").dataset.lease);
    const listed = await page.evaluate(() => [...document.querySelectorAll("#leases-table tbody tr")].map((r) => r.dataset.lease));
    if (!lease || !listed.includes(lease)) fail(`the ordered lease ${lease} is not in the lease list: ${listed}`);
    console.log(`LEASE ${lease}`);
    await page.screenshot({ path: `${shots}/2-invoice.png`, fullPage: true });

    // Pay it from the wallet page.
    await page.click("#invoice-pay-from-wallet");
    await page.waitForSelector("#tab-wallet:not(.hidden)");
    if (!(await page.inputValue("#pay-uri")).startsWith("bitcoin:")) fail("the wallet page did not get the payment request");
    await page.click("#pay-submit");
    await page.waitForFunction(() => (document.querySelector("#pay-result").dataset.txid || "").length === 64, null, { timeout: 60000 })
      .catch(async (e) => fail(`payment failed: ${await page.textContent("#pay-result")} (${e.message})`));
    const txid = await page.evaluate(() => document.querySelector("#pay-result").dataset.txid);
    await page.screenshot({ path: `${shots}/3-paid.png`, fullPage: true });

    // Back to the lease; from here on the page only listens.
    await page.click("nav button[data-tab=leases]");
    await page.waitForSelector("#invoice:not(.hidden)");
    const readsBefore = await page.evaluate(() => window.__reads.length);
    console.log(`PAID ${txid}`);
    await page.waitForFunction(() => document.querySelector("#vm-address").textContent.trim().length > 0, null, { timeout: 180000 })
      .catch(async (e) => {
        await page.screenshot({ path: `${shots}/failed.png`, fullPage: true });
        fail(`no machine address on the page: ${await page.textContent("#invoice")} (${e.message})`);
      });
    const vm = (await page.textContent("#vm-address")).trim();
    const reads = await page.evaluate((n) => window.__reads.slice(n), readsBefore);
    if (reads.some((r) => r.startsWith("/v1/leases"))) fail(`the page polled for the lease: ${reads.join(", ")}`);
    const progress = await page.evaluate(() => [...document.querySelectorAll("#progress li.done")].map((l) => l.dataset.step));
    console.log(`VM ${vm}`);
    console.log(`STEPS ${progress.join(",")}`);
    await page.screenshot({ path: `${shots}/4-running.png`, fullPage: true });
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(`FAILED ${e.stack || e}`); process.exit(1); });
