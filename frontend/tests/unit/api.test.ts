import { afterEach, describe, expect, it, vi } from 'vitest'
import { api, ApiError, onUnauthorized, retryAfterSeconds, waitText } from '../../src/api'

function answer(status: number, body?: unknown) {
  return vi.fn(async () =>
    new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: { 'content-type': 'application/json' },
    }),
  )
}

afterEach(() => vi.unstubAllGlobals())

describe('api', () => {
  it('says how long to wait after a 429 or 503', async () => {
    vi.stubGlobal('fetch', vi.fn(async () =>
      new Response(JSON.stringify({ error: { code: 'too_many_attempts', message: 'too many failed attempts; try again later' } }), {
        status: 429,
        headers: { 'content-type': 'application/json', 'retry-after': '840' },
      })))
    const error = await api.login('alice', 'password1').catch((e) => e)
    expect(error.retryAfter).toBe(840)
    expect(error.message).toBe('too many failed attempts; try again later (try again in 14 min)')
    vi.stubGlobal('fetch', vi.fn(async () =>
      new Response(JSON.stringify({ error: { code: 'overloaded', message: 'password checking is busy; try again shortly' } }), {
        status: 503,
        headers: { 'retry-after': '1' },
      })))
    const busy = await api.login('alice', 'password1').catch((e) => e)
    expect(busy.message).toBe('password checking is busy; try again shortly (try again in 1 s)')
    expect(waitText(59)).toBe('try again in 59 s')
    expect(retryAfterSeconds(null)).toBeUndefined()
    expect(retryAfterSeconds('Wed, 02 Dec 2026 12:00:30 GMT', Date.parse('2026-12-02T12:00:00Z'))).toBe(30)
  })

  it('logs out here or everywhere', async () => {
    const fetch = vi.fn(async () => new Response(null, { status: 204 }))
    vi.stubGlobal('fetch', fetch)
    await api.logout()
    await api.logout(true)
    const bodies = fetch.mock.calls.map((call) => (call as unknown[])[1] as RequestInit).map((init) => init.body)
    expect(bodies).toEqual(['{}', '{"everywhere":true}'])
  })

  it('surfaces the server error code and message', async () => {
    vi.stubGlobal('fetch', answer(409, { error: { code: 'username_taken', message: 'this username is taken' } }))
    const error = await api.signup('alice', 'password1').catch((e) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error.status).toBe(409)
    expect(error.code).toBe('username_taken')
    expect(error.message).toBe('this username is taken')
  })

  it('tells listeners about a 401 from any call', async () => {
    vi.stubGlobal('fetch', answer(401, { error: { code: 'unauthenticated', message: 'log in' } }))
    const seen = vi.fn()
    const stop = onUnauthorized(seen)
    await api.messages().catch(() => undefined)
    stop()
    expect(seen).toHaveBeenCalledTimes(1)
  })

  it('sends JSON with the idempotency key of the draft', async () => {
    const fetch = answer(201, { id: '1', text: 'hi', created_at: '2026-01-01T00:00:00.000Z' })
    vi.stubGlobal('fetch', fetch)
    await api.post('hi', 'draft-1')
    const [path, init] = fetch.mock.calls[0] as unknown as [string, RequestInit]
    expect(path).toBe('/api/messages')
    expect(init.method).toBe('POST')
    const headers = init.headers as Record<string, string>
    expect(headers['content-type']).toBe('application/json')
    expect(headers['idempotency-key']).toBe('draft-1')
    expect(JSON.parse(init.body as string)).toEqual({ text: 'hi' })
  })

  it('reports an unreachable server as a network error', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => { throw new TypeError('Failed to fetch') }))
    const error = await api.me().catch((e) => e)
    expect(error.code).toBe('network')
  })

  it('builds list and search queries', async () => {
    const fetch = answer(200, { items: [], next_cursor: null })
    vi.stubGlobal('fetch', fetch)
    await api.messages('abc', 20)
    await api.search('메시 50%')
    const paths = fetch.mock.calls.map((c) => (c as unknown as [string])[0])
    expect(paths[0]).toBe('/api/messages?limit=20&before=abc')
    expect(paths[1]).toBe('/api/messages/search?q=%EB%A9%94%EC%8B%9C+50%25&limit=50')
  })
})
