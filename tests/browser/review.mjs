// The reviewer console in a real browser: reads {origin, user, password, code, command,
// shots: {list, session}} as JSON on stdin (secrets never on the command line), signs in,
// searches for a typed command, opens the session, plays it until the command is on the
// player's screen, jumps back by the command timeline; prints what it saw as one JSON line.
// Used by tests/review_browser.rs; it asserts nothing itself.
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
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  page.on('request', (r) => out.requests.push(new URL(r.url()).host));
  const first = await page.goto(`${input.origin}/.gatehouse/review`);
  out.landed = { url: page.url(), status: first.status() };
  await page.fill('input[name=user]', input.user);
  await page.fill('input[name=password]', input.password);
  await page.fill('input[name=code]', input.code);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  out.console_home = { url: page.url() };

  // Search for the command.
  await page.fill('input[name=q]', input.command);
  await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')]);
  out.list = { url: page.url(), body: await page.textContent('main') };
  await page.screenshot({ path: input.shots.list, fullPage: true });

  // Open the session found, play it fast until the command shows on the screen.
  await Promise.all([page.waitForNavigation(), page.click('section.found a.open')]);
  out.session = { url: page.url() };
  await page.waitForSelector('#player[data-position]');
  await page.selectOption('#speed', '8');
  await page.click('#play');
  await page.waitForFunction(
    (cmd) => document.getElementById('screen').textContent.includes(cmd),
    input.command, { timeout: 60000 },
  );
  out.played = { screen: await page.textContent('#screen'), state: await page.getAttribute('#player', 'data-state') };
  // Pause if it still plays. Checked and clicked in one turn of the page's event loop: at speed 8
  // the replay may have ended already, and a click on an ended player starts it again.
  await page.evaluate(() => {
    if (document.getElementById('player').getAttribute('data-state') === 'playing') {
      document.getElementById('play').click();
    }
  });
  // Seek to the start (empty screen), then jump by the command timeline.
  await page.$eval('#seek', (s) => { s.value = '0'; s.dispatchEvent(new Event('input')); });
  await page.waitForFunction(() => document.getElementById('player').getAttribute('data-position') === '0.000');
  out.at_start = { screen: await page.textContent('#screen') };
  const jumps = await page.$$eval('button.jump', (bs) => bs.map((b) => b.textContent));
  out.jumps = jumps;
  const target = await page.$(`button.jump:has-text("${input.command}")`);
  await target.click();
  await page.waitForFunction(
    (cmd) => document.getElementById('screen').textContent.includes(cmd),
    input.command, { timeout: 30000 },
  );
  out.jumped = {
    screen: await page.textContent('#screen'),
    position: await page.getAttribute('#player', 'data-position'),
  };
  await page.screenshot({ path: input.shots.session, fullPage: true });
} catch (e) {
  out.error = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
