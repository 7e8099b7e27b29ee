import { afterEach, describe, expect, it, vi } from 'vitest'
import { api, ApiError, onUnauthorized } from '../../src/api'

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
