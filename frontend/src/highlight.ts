// Search highlighting that agrees with the server's matching: a query word matches a
// prefix of a word in the text, case-insensitively, in any script.

export interface Piece {
  text: string
  hit: boolean
}

/** Words of a query: letters and digits of any script; everything else separates. */
export function queryWords(query: string): string[] {
  return (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).filter((w) => w.length > 0)
}

/** Splits `text` into pieces, marking word prefixes that match a query word. */
export function highlight(text: string, query: string): Piece[] {
  const words = queryWords(query)
  if (words.length === 0) return [{ text, hit: false }]
  const pieces: Piece[] = []
  let last = 0
  for (const match of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    const word = match[0]
    const start = match.index ?? 0
    const lower = word.toLowerCase()
    // The longest query word this text word starts with.
    const hit = words
      .filter((w) => lower.startsWith(w))
      .sort((a, b) => b.length - a.length)[0]
    if (!hit) continue
    // Lower-casing can change length (rarely); fall back to the whole word then.
    const length = word.slice(0, hit.length).toLowerCase() === hit ? hit.length : word.length
    if (start > last) pieces.push({ text: text.slice(last, start), hit: false })
    pieces.push({ text: text.slice(start, start + length), hit: true })
    last = start + length
  }
  if (last < text.length) pieces.push({ text: text.slice(last), hit: false })
  return pieces
}

/** Characters as the server counts them (Unicode scalar values, not UTF-16 units). */
export function charCount(text: string): number {
  return Array.from(text).length
}

export const MAX_MESSAGE_CHARS = 4000
