// A real browser through the login: reads {url, user, password, code, app} as JSON on stdin
// (secrets never on the command line), prints what it saw as one JSON line on stdout.
// Used by tests/browser.rs; it asserts nothing itself.
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
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  const first = await page.goto(input.url);
  out.landed = { url: page.url(), status: first.status() };
  await page.fill('input[name=user]', input.user);
  await page.fill('input[name=password]', input.password);
  await page.fill('input[name=code]', input.code);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  out.after = { url: page.url(), body: await page.textContent('body') };
  out.cookies = (await context.cookies()).map((c) => ({
    name: c.name, domain: c.domain, path: c.path, secure: c.secure, httpOnly: c.httpOnly,
    sameSite: c.sameSite,
  }));
  const portal = new URL('/.gatehouse/', input.url).toString();
  await page.goto(portal);
  out.portal = { url: page.url(), body: await page.textContent('body') };
  await Promise.all([page.waitForNavigation(), page.click('form[action$="logout"] button[type=submit]')]);
  out.logout = { url: page.url() };
  const again = await page.goto(input.url);
  out.again = { url: page.url(), status: again.status() };
} catch (e) {
  out.error = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
