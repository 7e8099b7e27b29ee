import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import Composer from '../../src/components/Composer.vue'

afterEach(() => vi.unstubAllGlobals())

describe('Composer', () => {
  it('counts characters against the limit and flags going over', async () => {
    const wrapper = mount(Composer)
    await wrapper.get('textarea').setValue('🦀'.repeat(4001))
    const counter = wrapper.get('[data-testid=counter]')
    expect(counter.text()).toBe('4001 / 4000')
    expect(counter.classes()).toContain('over')
  })

  it('sends a draft once however often send is clicked', async () => {
    let release: (r: Response) => void = () => {}
    const fetch = vi.fn(() => new Promise<Response>((r) => (release = r)))
    vi.stubGlobal('fetch', fetch)
    const wrapper = mount(Composer)
    await wrapper.get('textarea').setValue('hello')
    await wrapper.get('form').trigger('submit')
    await wrapper.get('form').trigger('submit')
    expect(fetch).toHaveBeenCalledTimes(1)
    release(new Response(JSON.stringify({ id: '1', text: 'hello', created_at: 'x' }), { status: 201 }))
    await flushPromises()
    expect(wrapper.emitted('posted')).toHaveLength(1)
    expect((wrapper.get('textarea').element as HTMLTextAreaElement).value).toBe('')
  })

  it('shows the server message next to the composer', async () => {
    vi.stubGlobal('fetch', vi.fn(async () =>
      new Response(JSON.stringify({ error: { code: 'invalid_text', message: 'text must be at most 4000 characters' } }), { status: 422 })))
    const wrapper = mount(Composer)
    await wrapper.get('textarea').setValue('x')
    await wrapper.get('form').trigger('submit')
    await flushPromises()
    expect(wrapper.get('[data-testid=composer-error]').text()).toBe('text must be at most 4000 characters')
  })

  it('keeps the same key when a failed send is retried unchanged', async () => {
    const keys: string[] = []
    vi.stubGlobal('fetch', vi.fn(async (_: string, init: RequestInit) => {
      keys.push((init.headers as Record<string, string>)['idempotency-key'])
      return new Response('{}', { status: 503 })
    }))
    const wrapper = mount(Composer)
    await wrapper.get('textarea').setValue('retry me')
    await wrapper.get('form').trigger('submit')
    await flushPromises()
    await wrapper.get('form').trigger('submit')
    await flushPromises()
    expect(keys).toHaveLength(2)
    expect(keys[0]).toBe(keys[1])
  })
})
