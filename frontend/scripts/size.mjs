// The production build's JavaScript, raw and gzipped: everything a first visit can load,
// the tracing SDK chunks included. Budget: under 150 KB gzipped.
import { readdirSync, readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'

const dir = new URL('../dist/assets/', import.meta.url).pathname
let raw = 0
let gz = 0
for (const name of readdirSync(dir).filter((n) => n.endsWith('.js'))) {
  const data = readFileSync(dir + name)
  raw += data.length
  gz += gzipSync(data, { level: 9 }).length
}
const kb = (n) => (n / 1024).toFixed(1) + ' KB'
console.log(`JavaScript: ${kb(raw)} raw, ${kb(gz)} gzipped (budget 150 KB gzipped)`)
if (gz > 150 * 1024) process.exit(1)
