// The reviewer console's live view in a real browser: reads {origin, user, password, code,
// expect, shots: {list, live}} as JSON on stdin, signs in, opens the live session from the
// list and waits until the live terminal shows `expect` (typed by the test meanwhile);
// prints what it saw as one JSON line. Used by tests/review_browser.rs; asserts nothing.
import { chromium } from 'playwright-core';

const input = JSON.parse(await new Promise((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => { s += d; });
  process.stdin.on('end', () => resolve(s));
}));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = { console: [] };
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  await page.goto(`${input.origin}/.gatehouse/review`);
  await page.fill('input[name=user]', input.user);
  await page.fill('input[name=password]', input.password);
  await page.fill('input[name=code]', input.code);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  out.list = { url: page.url(), live: await page.textContent('section.live') };
  await page.screenshot({ path: input.shots.list, fullPage: true });
  await Promise.all([page.waitForNavigation(), page.click('section.live tr.ssh a.open')]);
  out.session = { url: page.url() };
  await page.waitForSelector('#live[data-state=watching]');
  await page.waitForFunction(
    (text) => document.getElementById('live-screen').textContent.includes(text),
    input.expect, { timeout: 60000 },
  );
  out.live = { screen: await page.textContent('#live-screen') };
  await page.screenshot({ path: input.shots.live, fullPage: true });
} catch (e) {
  out.error = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
