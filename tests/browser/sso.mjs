// A real browser through an SSO login: reads {url, provider, login, password, code, shots}
// as JSON on stdin (secrets never on the command line), prints what it saw as one JSON line
// on stdout. From the app URL: the app host's login page, the provider's button, the
// provider's own login and consent pages, Gatehouse's TOTP page, then back to the app
// through the handoff. `shots.login` / `shots.totp`: where to save screenshots of
// Gatehouse's login and TOTP pages. Used by tests/browser.rs; it asserts nothing itself.
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
const out = { console: [], requests: [] };
const TIMEOUT = 20000;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 800, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()} @ ${page.url()}`));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message} @ ${page.url()}`));
  // Every host the browser talked to (no CDN: only Gatehouse and the provider).
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!out.requests.includes(u.host)) out.requests.push(u.host);
  });

  await page.goto(input.url);
  out.landed = { url: page.url() };
  out.providers = await page.locator('.providers li').allTextContents();
  if (input.shots?.login) await page.screenshot({ path: input.shots.login, fullPage: true });

  // The provider's button: to its login page.
  await page.click(`a.provider:has-text("Sign in with ${input.provider}")`);
  await page.waitForSelector('input[name=login]');
  out.provider_login = { url: page.url() };
  await page.fill('input[name=login]', input.login);
  await page.fill('input[name=password]', input.password);
  await page.click('button[type=submit]');
  // Consent, then back to Gatehouse's TOTP page.
  await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
  out.consent = { url: page.url() };
  await page.click('button[type=submit]');
  await page.waitForURL(/\/\.gatehouse\/login\/totp$/);
  out.totp = { url: page.url(), body: await page.textContent('main') };
  if (input.shots?.totp) await page.screenshot({ path: input.shots.totp, fullPage: true });

  // The code: through the handoff (its form submits itself) to the app.
  await page.fill('input[name=code]', input.code);
  await Promise.all([
    page.waitForURL(input.url, { timeout: TIMEOUT }),
    page.click('button[type=submit]'),
  ]);
  out.after = { url: page.url(), body: await page.textContent('body') };
  out.cookies = (await context.cookies()).map((c) => ({
    name: c.name, domain: c.domain, secure: c.secure, httpOnly: c.httpOnly, sameSite: c.sameSite,
  }));
} catch (e) {
  out.error = String(e);
  try {
    const pages = browser.contexts()[0]?.pages() ?? [];
    const p = pages[pages.length - 1];
    if (p) out.stuck = { url: p.url(), body: (await p.content()).slice(0, 4000) };
  } catch { /* nothing more to say */ }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
