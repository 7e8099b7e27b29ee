import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import ActivityFeed from '../../src/components/ActivityFeed.vue'

/** Just enough of EventSource to drive the feed. */
class FakeSource {
  static CLOSED = 2
  static made: FakeSource[] = []
  readyState = 0
  onopen: (() => void) | null = null
  onerror: (() => void) | null = null
  listeners = new Map<string, (e: MessageEvent) => void>()
  constructor(public url: string) {
    FakeSource.made.push(this)
  }
  addEventListener(type: string, listener: (e: MessageEvent) => void) {
    this.listeners.set(type, listener)
  }
  emit(type: string, data: unknown) {
    this.listeners.get(type)?.(new MessageEvent(type, { data: JSON.stringify(data) }))
  }
  close() {
    this.readyState = FakeSource.CLOSED
  }
}

beforeEach(() => {
  FakeSource.made = []
  vi.stubGlobal('EventSource', FakeSource)
  vi.stubGlobal('fetch', vi.fn(async () => new Response(JSON.stringify({ items: [] }), { status: 200 })))
})
afterEach(() => {
  vi.unstubAllGlobals()
  vi.useRealTimers()
})

describe('ActivityFeed', () => {
  it('shows new entries live, newest first, in an aria-live list', async () => {
    const wrapper = mount(ActivityFeed)
    await flushPromises()
    const source = FakeSource.made[0]
    expect(source.url).toBe('/api/activity/stream')
    source.onopen?.()
    source.emit('message.created', { type: 'message.created', at: '2026-11-27T10:00:00.000Z', detail: {} })
    source.emit('message.deleted', { type: 'message.deleted', at: '2026-11-27T10:00:01.000Z', detail: {} })
    await flushPromises()
    const items = wrapper.findAll('[data-testid=activity] li')
    expect(items.map((i) => i.find('.kind').text())).toEqual(['Message deleted', 'Message posted'])
    expect(wrapper.get('[data-testid=activity]').attributes('aria-live')).toBe('polite')
  })

  it('reconnects with backoff after the stream is closed, reloading what it missed', async () => {
    vi.useFakeTimers()
    mount(ActivityFeed)
    await flushPromises()
    const first = FakeSource.made[0]
    first.readyState = FakeSource.CLOSED
    first.onerror?.()
    expect(FakeSource.made).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(1000)
    await flushPromises()
    expect(FakeSource.made).toHaveLength(2)
    // The list was fetched again: once at mount, once before reconnecting.
    expect(vi.mocked(fetch).mock.calls.filter((c) => String(c[0]).startsWith('/api/activity?'))).toHaveLength(2)
  })
})
