// Search highlighting that agrees with the server's matching: a query word matches a
// prefix of a word in the text, case-insensitively, in any script.

export interface Piece {
  text: string
  hit: boolean
}

/** Longest token, in characters, as the server indexes it. */
export const MAX_TOKEN_CHARS = 64

// Unicode blocks of punctuation outside ASCII: they separate tokens, as on the server.
const PUNCTUATION_BLOCKS: [number, number][] = [
  [0x00a0, 0x00bf], // Latin-1 punctuation and signs
  [0x2000, 0x206f], // General Punctuation
  [0x3000, 0x303f], // CJK Symbols and Punctuation
  [0xfe30, 0xfe4f], // CJK Compatibility Forms
  [0xff00, 0xff0f], // Fullwidth ASCII punctuation
  [0xff1a, 0xff20],
  [0xff3b, 0xff40],
  [0xff5b, 0xff65],
]

/**
 * Whether a character belongs to a token: the server's rule (`is_token_char` in
 * common/core/src/domain.rs), letters and digits of any script plus symbols outside ASCII
 * (emoji), with ASCII punctuation, whitespace, controls and punctuation blocks separating.
 */
function isTokenChar(c: string): boolean {
  if (/[\p{Alphabetic}\p{N}]/u.test(c)) return true
  const cp = c.codePointAt(0) ?? 0
  if (cp < 0x80 || /[\p{White_Space}\p{Cc}]/u.test(c)) return false
  // Zero-width joiner and variation selectors hold emoji sequences together.
  if (cp === 0x200d || (cp >= 0xfe00 && cp <= 0xfe0f)) return true
  return !PUNCTUATION_BLOCKS.some(([from, to]) => cp >= from && cp <= to)
}

interface Span {
  /** The token: NFC-normalised, lower-cased character by character, cut to MAX_TOKEN_CHARS. */
  token: string
  /** Its characters as written, one string per code point. */
  chars: string[]
  /** Where it starts in the text (UTF-16 index). */
  start: number
}

/** The server's token of a run of token characters (see `search_tokens`). */
function tokenOf(chars: string[]): string {
  // Per character, as Rust's char::to_lowercase (no context-dependent final sigma).
  const lower = Array.from(chars.join('').normalize('NFC')).map((c) => c.toLowerCase())
  return Array.from(lower.join('')).slice(0, MAX_TOKEN_CHARS).join('')
}

function spans(text: string): Span[] {
  const found: Span[] = []
  let current: Span | null = null
  let index = 0
  for (const c of text) {
    if (isTokenChar(c)) {
      current ??= { token: '', chars: [], start: index }
      current.chars.push(c)
    } else if (current) {
      found.push(current)
      current = null
    }
    index += c.length
  }
  if (current) found.push(current)
  for (const span of found) span.token = tokenOf(span.chars)
  return found
}

/** Search tokens of a text, exactly as the server makes them (docs/search/tokens.json):
 * NFC-normalised, split on the server's separators, lower-cased, cut to 64 characters. */
export function tokens(text: string): string[] {
  return spans(text).map((s) => s.token)
}

/** Words of a query: the server's tokens of it. */
export function queryWords(query: string): string[] {
  return tokens(query)
}

/** Splits `text` into pieces, marking word prefixes that match a query word. */
export function highlight(text: string, query: string): Piece[] {
  const words = queryWords(query)
  if (words.length === 0) return [{ text, hit: false }]
  const pieces: Piece[] = []
  let last = 0
  for (const span of spans(text)) {
    // The longest query word this token starts with.
    const hit = words
      .filter((w) => span.token.startsWith(w))
      .sort((a, b) => b.length - a.length)[0]
    if (!hit) continue
    // As many characters as written as it takes to spell the hit lower-cased.
    let length = 0
    let spelled = ''
    for (const c of span.chars) {
      if (spelled.normalize('NFC').length >= hit.length) break
      spelled += c.toLowerCase()
      length += c.length
    }
    // A combining mark belongs with the character before it.
    while (length < span.chars.join('').length && /\p{M}/u.test(text.slice(span.start + length, span.start + length + 1))) {
      length += 1
    }
    if (span.start > last) pieces.push({ text: text.slice(last, span.start), hit: false })
    pieces.push({ text: text.slice(span.start, span.start + length), hit: true })
    last = span.start + length
  }
  if (last < text.length) pieces.push({ text: text.slice(last), hit: false })
  return pieces
}

/** Characters as the server counts them (Unicode scalar values, not UTF-16 units). */
export function charCount(text: string): number {
  return Array.from(text).length
}

export const MAX_MESSAGE_CHARS = 4000
