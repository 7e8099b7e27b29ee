import { describe, expect, it } from 'vitest'
import { charCount, highlight, queryWords, tokens } from '../../src/highlight'
import table from '../../../docs/search/tokens.json'

const marked = (text: string, q: string) =>
  highlight(text, q)
    .map((p) => (p.hit ? `[${p.text}]` : p.text))
    .join('')

describe('highlight', () => {
  it('marks word prefixes case-insensitively, like the server matches', () => {
    expect(marked('Hello, World!', 'hel wor')).toBe('[Hel]lo, [Wor]ld!')
  })
  it('works in any script', () => {
    expect(marked('메시지를 보냈다', '메시')).toBe('[메시]지를 보냈다')
    expect(marked('Grüße aus Köln', 'kö')).toBe('Grüße aus [Kö]ln')
  })
  it('does not mark inside words', () => {
    expect(marked('shell', 'hel')).toBe('shell')
  })
  it('treats punctuation and SQL wildcards as separators', () => {
    expect(queryWords('50% _off_ "quoted"')).toEqual(['50', 'off', 'quoted'])
    expect(marked('100% off', '%')).toBe('100% off')
  })
  it('keeps emoji intact', () => {
    expect(marked('ship it 🚀 now', 'no')).toBe('ship it 🚀 [no]w')
  })
})

describe('tokens', () => {
  // The server's search_tokens passes the same table (common/core/src/domain.rs).
  it.each(table.cases)('splits $text as the server does', ({ text, tokens: expected }) => {
    expect(tokens(text)).toEqual(expected)
  })
  it('matches composed and decomposed accents alike, marking whole characters', () => {
    expect(marked('Cafe\u0301 crème', 'café')).toBe('[Cafe\u0301] crème')
    expect(marked('Café', 'cafe\u0301')).toBe('[Café]')
  })
  it('marks emoji and punctuation-separated words the server would match', () => {
    expect(marked('party 🎉 time', '🎉')).toBe('party [🎉] time')
    expect(marked('«quoted»', 'quo')).toBe('«[quo]ted»')
  })
})

describe('charCount', () => {
  it('counts code points as the server does, not UTF-16 units', () => {
    expect(charCount('🦀🦀')).toBe(2)
    expect('🦀🦀'.length).toBe(4)
    expect(charCount('메시지')).toBe(3)
  })
})
