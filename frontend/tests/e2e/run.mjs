// End-to-end tests in a real browser: Debian's Chromium driven by playwright-core, against
// a real `missive dev` (MariaDB + Redis) serving the built app. Run by scripts/test.sh:
//   MISSIVE_BIN=.../missive node tests/e2e/run.mjs
// Screenshots (desktop and phone width) go to frontend/test-results/.
import { spawn, execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import { mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const frontend = join(here, '..', '..')
const results = join(frontend, 'test-results')
mkdirSync(results, { recursive: true })
const require = createRequire(import.meta.url)
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8')

const binary = process.env.MISSIVE_BIN
if (!binary) throw new Error('MISSIVE_BIN must point at the missive binary')
const server = (process.env.MISSIVE_TEST_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306').replace(/\/$/, '')
const redis = process.env.MISSIVE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
const name = `missive_test_e2e_${process.pid}`

function startMissive() {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['dev'], {
      env: {
        PATH: process.env.PATH,
        PORT: '0',
        DEV_EVENTS_PORT: '0',
        // The browser-tracing test's collector listens on a port chosen later.
        CSP_CONNECT_SRC: 'http://127.0.0.1:*',
        LOG_LEVEL: 'warn',
        DATABASE_URL: `${server}/${name}`,
        REDIS_URL: redis,
        REDIS_KEY_PREFIX: `${name}:`,
        FRONTEND_DIR: join(frontend, 'dist'),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let buffered = ''
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      const match = buffered.match(/running at (http:\/\/[^/\s]+)\//)
      if (match) resolve({ child, url: match[1] })
    })
    child.on('exit', (code) => reject(new Error(`missive dev exited with ${code}`)))
  })
}

let passed = 0
let failed = 0
async function test(title, body) {
  const started = Date.now()
  try {
    await body()
    passed++
    console.log(`PASS ${title} (${Date.now() - started} ms)`)
  } catch (error) {
    failed++
    console.log(`FAIL ${title}\n  ${error.stack ?? error}`)
  }
}
function assert(condition, message) {
  if (!condition) throw new Error(message)
}

const { child, url } = await startMissive()
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
})
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
const page = await context.newPage()
page.on('dialog', (dialog) => dialog.accept())
const consoleErrors = []
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()))

const messages = () => page.locator('[data-testid=messages] > li')
async function signup(user, password) {
  await page.goto(url + '/')
  await page.getByRole('button', { name: 'New here? Create an account' }).click()
  await page.getByLabel('Username', { exact: true }).fill(user)
  await page.getByLabel('Password', { exact: true }).fill(password)
  await page.getByRole('button', { name: 'Sign up' }).click()
}
async function post(text) {
  await page.getByLabel('Message', { exact: true }).fill(text)
  await page.getByTestId('send').click()
  await page.getByText(text, { exact: true }).first().waitFor()
}

try {
  await test('the app is served with the right caching and compression', async () => {
    const index = await page.request.get(url + '/', { headers: { 'accept-encoding': 'br, gzip' } })
    assert(index.status() === 200, `index ${index.status()}`)
    assert(index.headers()['cache-control'] === 'no-cache', `index cache: ${index.headers()['cache-control']}`)
    // The app runs under its Content-Security-Policy (a violation would be a console
    // error, which the last test fails on).
    const csp = index.headers()['content-security-policy'] ?? ''
    assert(csp.includes("script-src 'self';") && csp.includes("frame-ancestors 'none'"), `CSP: ${csp}`)
    assert(index.headers()['x-content-type-options'] === 'nosniff', 'nosniff')
    const html = await index.text()
    const asset = html.match(/\/assets\/[^"]+\.js/)[0]
    const js = await page.request.get(url + asset, { headers: { 'accept-encoding': 'br' } })
    assert(js.headers()['cache-control'].includes('immutable'), 'assets are immutable')
    assert(js.headers()['content-encoding'] === 'br', `asset encoding ${js.headers()['content-encoding']}`)
    const deep = await page.request.get(url + '/some/client/route')
    assert(deep.status() === 200 && (await deep.text()).includes('<div id="app">'), 'SPA fallback')
    const api404 = await page.request.get(url + '/api/nope')
    assert(api404.status() === 404 && (await api404.json()).error.code === 'not_found', 'API 404 stays JSON')
  })

  await test('sign up, post Korean and emoji, reload and stay logged in', async () => {
    await signup('alice', 'alice-password')
    await page.getByTestId('username').waitFor()
    await post('안녕하세요, 메시지를 보냈다 🦀🚀')
    await page.reload()
    await page.getByTestId('username').waitFor()
    assert((await page.getByTestId('username').textContent()) === 'alice', 'still alice')
    await page.getByText('안녕하세요, 메시지를 보냈다 🦀🚀').waitFor()
  })

  await test('double-clicking send posts once', async () => {
    const before = await messages().count()
    // Every POST the double click sends is watched, so the test waits for its answer
    // instead of sleeping and hoping a second one would have shown by then.
    const posts = []
    const watch = (req) => {
      if (req.method() === 'POST' && new URL(req.url()).pathname === '/api/messages') posts.push(req)
    }
    page.on('request', watch)
    await page.getByLabel('Message', { exact: true }).fill('only once please')
    await page.getByTestId('send').dblclick()
    await page.getByText('only once please').first().waitFor()
    await Promise.all(posts.map((req) => req.response()))
    page.off('request', watch)
    assert(posts.length >= 1, 'the post was sent')
    await page.reload()
    await page.getByText('only once please').first().waitFor()
    assert((await page.getByText('only once please').count()) === 1, 'one message')
    assert((await messages().count()) === before + 1, 'one more message')
  })

  await test('the activity feed updates live', async () => {
    const feed = page.getByTestId('activity')
    const count = await feed.locator('li').count()
    await post('live feed check')
    await feed.locator('li').nth(count).waitFor({ timeout: 10000 })
    assert((await feed.locator('li').first().textContent()).includes('Message posted'), 'newest first')
  })

  await test('paginate with load more', async () => {
    for (let i = 1; i <= 25; i++) {
      const res = await page.request.post(url + '/api/messages', { data: { text: `bulk message ${i}` } })
      assert(res.status() === 201, `seed ${res.status()}`)
    }
    await page.reload()
    await page.getByText('bulk message 25').waitFor()
    assert((await messages().count()) === 20, `first page ${await messages().count()}`)
    await page.getByTestId('more').click()
    await page.getByText('bulk message 1', { exact: true }).waitFor()
    assert((await messages().count()) === 28, `all ${await messages().count()}`)
  })

  // The 1 s first-render budget is a figure, printed here for the record; the test only
  // asserts that the list comes back after a reload (a loaded CI machine must not decide).
  await test('the message list renders again after a reload', async () => {
    await page.reload()
    await messages().first().waitFor({ timeout: 10000 })
    const ms = await page.evaluate(() => performance.now())
    console.log(`  first render of the message list: ${ms.toFixed(0)} ms after navigation start (budget 1000 ms)`)
  })

  await test('search highlights matches (debounced)', async () => {
    await page.getByLabel('Search your messages').fill('메시')
    await page.getByTestId('results').locator('mark', { hasText: '메시' }).waitFor()
    await page.getByLabel('Search your messages').fill('bulk message 2')
    await page.getByText('7 results').waitFor()
    await page.getByLabel('Search your messages').fill('')
  })

  await test('screenshots and accessibility of the main screen', async () => {
    await page.screenshot({ path: join(results, 'main-desktop.png'), fullPage: true })
    await page.setViewportSize({ width: 360, height: 740 })
    await page.screenshot({ path: join(results, 'main-phone.png'), fullPage: true })
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth)
    assert(!overflow, 'no horizontal scrolling at 360 px')
    await page.setViewportSize({ width: 1280, height: 800 })
    // Evaluated through DevTools: the page's CSP (rightly) refuses an injected <script>.
    await page.evaluate(axeSource)
    const found = await page.evaluate(async () => (await window.axe.run()).violations)
    const serious = found.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    assert(serious.length === 0, 'axe: ' + JSON.stringify(serious.map((v) => [v.id, v.nodes.length])))
  })

  await test('a too-long message shows the server error next to the composer', async () => {
    await page.getByLabel('Message', { exact: true }).fill('x'.repeat(4001))
    assert((await page.getByTestId('counter').textContent()).includes('4001 / 4000'), 'counter')
    await page.getByTestId('send').click()
    await page.getByTestId('composer-error').filter({ hasText: /4000/ }).waitFor()
  })

  await test('delete a message after confirming', async () => {
    await page.getByLabel('Message', { exact: true }).fill('')
    await post('delete me soon')
    await page.getByRole('button', { name: 'Delete message: delete me soon' }).click()
    await page.getByText('delete me soon').waitFor({ state: 'detached' })
    await page.reload()
    await messages().first().waitFor()
    assert((await page.getByText('delete me soon').count()) === 0, 'gone after reload')
  })

  await test('log out, a taken username is refused, a second user sees nothing of the first', async () => {
    await page.getByRole('button', { name: 'Log out', exact: true }).click()
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    await signup('alice', 'another-password')
    await page.getByRole('alert').filter({ hasText: /taken/ }).waitFor()
    await page.getByRole('button', { name: 'Have an account? Log in' }).click()
    await page.getByRole('button', { name: 'New here? Create an account' }).click()
    await page.getByLabel('Username', { exact: true }).fill('bob')
    await page.getByLabel('Password', { exact: true }).fill('bob-password')
    await page.getByRole('button', { name: 'Sign up' }).click()
    await page.getByTestId('username').filter({ hasText: 'bob' }).waitFor()
    await page.getByText('No messages yet.').waitFor()
    await page.getByLabel('Search your messages').fill('bulk')
    await page.getByText('0 results').waitFor()
  })

  await test('log back in as the first user', async () => {
    await page.getByRole('button', { name: 'Log out', exact: true }).click()
    await page.getByLabel('Username', { exact: true }).fill('alice')
    await page.getByLabel('Password', { exact: true }).fill('alice-password')
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.getByText('bulk message 25').waitFor()
  })

  await test('a 401 anywhere returns to the login screen', async () => {
    await context.clearCookies()
    await page.getByLabel('Message', { exact: true }).fill('session is gone')
    await page.getByTestId('send').click()
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    await page.getByLabel('Username', { exact: true }).fill('alice')
    await page.getByLabel('Password', { exact: true }).fill('alice-password')
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.getByText('bulk message 25').waitFor()
  })

  await test('browser spans are exported and the API call carries their trace', async () => {
    // A collector stand-in: OTLP/HTTP JSON, with the CORS answers a browser needs.
    const received = []
    const collector = createServer((req, res) => {
      res.setHeader('access-control-allow-origin', '*')
      res.setHeader('access-control-allow-headers', '*')
      if (req.method === 'OPTIONS') return res.end()
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        try { received.push(JSON.parse(body)) } catch { /* protobuf would not parse; not expected */ }
        res.setHeader('content-type', 'application/json')
        res.end('{}')
      })
    })
    await new Promise((r) => collector.listen(0, '127.0.0.1', r))
    const traces = `http://127.0.0.1:${collector.address().port}/v1/traces`
    const traced = await context.newPage()
    // The runtime config, as an operator would deploy it.
    await traced.route('**/config.json', (route) =>
      route.fulfill({ json: { otlpTracesUrl: traces, serviceName: 'missive-frontend-e2e' } }))
    const sent = []
    traced.on('request', (r) => r.url().includes('/api/') && sent.push(r.headers()['traceparent']))
    await traced.goto(url + '/')
    await traced.getByLabel('Message', { exact: true }).fill('traced from the browser')
    await traced.getByTestId('send').click()
    await traced.getByText('traced from the browser').first().waitFor()
    const traceparent = sent.filter(Boolean).pop()
    assert(traceparent && /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/.test(traceparent), `traceparent ${traceparent}`)
    const traceId = traceparent.split('-')[1]
    const deadline = Date.now() + 10000
    const spans = () => received.flatMap((r) => r.resourceSpans ?? []).flatMap((r) => r.scopeSpans ?? []).flatMap((s) => s.spans ?? [])
    while (!spans().some((s) => s.traceId === traceId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    await traced.close()
    collector.close()
    const fetchSpan = spans().find((s) => s.traceId === traceId)
    assert(fetchSpan, `no exported span in trace ${traceId}: ${JSON.stringify(spans().map((s) => s.name))}`)
    assert(!fetchSpan.parentSpanId, 'the browser span is the root')
    assert(traceparent.split('-')[2] === fetchSpan.spanId, 'the API call is its child')
    assert(spans().some((s) => s.name === 'documentLoad'), 'document load is traced')
  })

  await test('log out everywhere ends the session in another browser too', async () => {
    const other = await browser.newContext()
    const elsewhere = await other.newPage()
    await elsewhere.goto(url + '/')
    await elsewhere.getByLabel('Username', { exact: true }).fill('alice')
    await elsewhere.getByLabel('Password', { exact: true }).fill('alice-password')
    await elsewhere.getByRole('button', { name: 'Log in' }).click()
    await elsewhere.getByTestId('username').waitFor()
    await page.getByRole('button', { name: 'Log out everywhere' }).click()
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    // The other browser's next request finds its session gone.
    await elsewhere.getByLabel('Message', { exact: true }).fill('still here?')
    await elsewhere.getByTestId('send').click()
    await elsewhere.getByRole('heading', { name: 'Log in' }).waitFor()
    await other.close()
  })

  await test('too many failed logins say how long to wait', async () => {
    for (let i = 0; i < 6; i++) {
      await page.getByLabel('Username', { exact: true }).fill('alice')
      await page.getByLabel('Password', { exact: true }).fill(`wrong password ${i}`)
      await page.getByRole('button', { name: 'Log in' }).click()
      await page.getByTestId('auth-error').waitFor()
    }
    await page.getByTestId('auth-error').filter({ hasText: /try again in \d+ min/ }).waitFor()
  })

  await test('no errors in the browser console', async () => {
    // 4xx answers the tests provoke on purpose are logged by Chromium as failed loads.
    const unexpected = consoleErrors.filter((e) => !/status of (401|409|422|429)/.test(e))
    assert(unexpected.length === 0, unexpected.join('\n'))
  })
} finally {
  await browser.close()
  child.kill('SIGTERM')
  try {
    execFileSync('mariadb', ['-h', '127.0.0.1', '-u', 'root', '-e', `DROP DATABASE IF EXISTS \`${name}\``])
  } catch {
    // The database is dropped by the next run's clean-up (scripts/test.sh) otherwise.
  }
}
console.log(`screenshots: ${results}`)
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
