// Drives Debian's chromium through puppeteer-core against a running Karpetrack and prints one JSON
// line of what it saw. Usage: node view.js check BASE_URL SCREENSHOT.png
//                             node view.js measure BASE_URL SCREENSHOT.png   (first render and transfer only)
//                             node view.js actuation BASE_URL              (recent actions and refusals)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const [mode, base, screenshot] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

async function launch() {
  // A fresh profile each run; the network is closed, so everything that phones home is off (else it hangs).
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'karpetrack-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--window-size=1400,1000'],
    defaultViewport: { width: 1400, height: 1000 },
    protocolTimeout: 60000,
  });
  return { browser, profile };
}

// WCAG contrast of every visible text element against the first opaque background behind it.
function contrastReport() {
  const parse = (c) => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(',').map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const lum = ({ r, g, b }) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (e) => { for (; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0.9) return c; } return { r: 255, g: 255, b: 255, a: 1 }; };
  let worst = { ratio: 99, text: '' };
  let checked = 0;
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('dialog:not([open])')) continue;
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !e.getClientRects().length) continue;
    const style = getComputedStyle(e);
    if (style.visibility === 'hidden') continue;
    const fg = parse(style.color), bg = bgOf(e);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    checked++;
    if (ratio < worst.ratio) worst = { ratio, text: e.textContent.trim().slice(0, 40), tag: e.tagName, cls: e.className };
  }
  return { checked, worst };
}

async function check(page, errors) {
  const out = { errors };
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#node-rows .row[data-node]', { timeout: 60000 });
  await page.waitForSelector('#rec-rows tr[data-id]', { timeout: 60000 });
  out.title = await page.title();
  out.nodeCount = await page.$eval('#node-count', (e) => e.textContent);
  out.nodes = await page.$$eval('#node-rows .row[data-node]', (rows) => rows.map((r) => r.dataset.node));
  out.recommendations = await page.$$eval('#rec-rows tr[data-id]', (rows) => rows.map((r) => r.dataset.id));
  out.tiles = await page.$eval('#tiles', (e) => e.innerText);
  out.status = await page.$eval('#status', (e) => e.textContent);

  // A click on a node opens its explanation.
  const first = out.nodes[0];
  await page.click(`#node-rows .row[data-node="${first}"]`);
  await page.waitForFunction(() => document.getElementById('explain').open && document.getElementById('explain-title').textContent.startsWith('Node '));
  out.nodeDialog = await page.$eval('#explain', (e) => e.innerText);
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('explain').open);

  // …and a click on a recommendation opens its own.
  await page.click('#rec-rows tr[data-id]');
  await page.waitForFunction(() => document.getElementById('explain').open);
  out.recDialog = await page.$eval('#explain', (e) => e.innerText);
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('explain').open);

  // Keyboard only: focus the node map, move down one row, Enter.
  await page.focus('#node-viewport');
  await page.keyboard.press('Home');
  await page.keyboard.press('ArrowDown');
  out.keyboardSelected = await page.$eval('#node-rows .row.sel', (e) => e.dataset.node);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('explain').open);
  out.keyboardDialog = await page.$eval('#explain-title', (e) => e.textContent);
  await page.keyboard.press('Escape');

  // Sorting by price and filtering by class narrow the map.
  await page.select('#f-sort', 'price');
  out.sortedByPrice = await page.$$eval('#node-rows .row[data-node]', (rows) => rows.map((r) => r.children[3].textContent));
  const cls = await page.$eval('#f-class', (s) => s.options[1].value);
  await page.select('#f-class', cls);
  out.filteredClass = cls;
  out.filteredClasses = await page.$$eval('#node-rows .row[data-node]', (rows) => [...new Set(rows.map((r) => r.children[1].textContent))]);
  await page.select('#f-class', '');

  out.contrast = await page.evaluate(contrastReport);

  // Live: without a reload, what the page shows changes as the demo changes.
  const before = await page.evaluate(() => document.getElementById('tiles').innerText + document.getElementById('node-rows').innerText);
  await page.waitForFunction((b) => document.getElementById('tiles').innerText + document.getElementById('node-rows').innerText !== b, { timeout: 90000, polling: 500 }, before);
  out.changed = true;
  out.navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  await page.evaluate(() => { document.activeElement.blur(); window.scrollTo(0, 0); });
  await page.screenshot({ path: screenshot, fullPage: false });
  return out;
}

async function measure(page) {
  const started = Date.now();
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#node-rows .row[data-node]', { timeout: 120000 });
  const firstRenderMs = Date.now() - started;
  const transfer = await page.evaluate(() => {
    const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
    return entries.map((e) => ({ name: e.name.replace(location.origin, ''), transferBytes: e.transferSize, bodyBytes: e.decodedBodySize, ms: Math.round(e.duration) }));
  });
  const nodes = await page.$eval('#node-count', (e) => e.textContent);
  const domRows = await page.$$eval('#node-rows .row', (r) => r.length);
  // Scrolling to the end and rendering there: the virtualised rows keep the DOM small.
  const t = Date.now();
  await page.$eval('#node-viewport', (vp) => { vp.scrollTop = vp.scrollHeight; });
  await page.waitForFunction(() => { const rows = document.querySelectorAll('#node-rows .row'); return rows.length && rows[rows.length - 1].style.transform !== ''; });
  const scrollMs = Date.now() - t;
  await page.screenshot({ path: screenshot });
  return { firstRenderMs, transfer, nodes, domRows, scrollMs };
}

// With actuation on: the page's recent actions and refusals once at least one operation has ended.
async function actuation(page) {
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#recent-rows tr[data-id]', { timeout: 60000 });
  return {
    recent: await page.$$eval('#recent-rows tr[data-id]', (rows) => rows.map((r) => r.dataset.id)),
    mode: await page.$eval('#actuation-mode', (e) => e.textContent),
    refusals: await page.$eval('#actuation-refusals', (e) => e.textContent),
    section: await page.$eval('#actuation', (e) => e.innerText),
  };
}

(async () => {
  const { browser, profile } = await launch();
  const errors = [];
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
    page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
    page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`); });
    const result = mode === 'measure' ? await measure(page) : mode === 'actuation' ? await actuation(page) : await check(page, errors);
    result.errors = errors;
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
