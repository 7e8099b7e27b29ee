// After `vite build`: writes .br and .gz next to every compressible file in dist/, so the
// server sends precompressed bytes (best compression, paid once at build time).
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { brotliCompressSync, constants, gzipSync } from 'node:zlib'

const root = new URL('../dist/', import.meta.url).pathname
const compressible = /\.(js|css|html|json|svg|txt|map)$/

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path)
    else if (compressible.test(name)) {
      const data = readFileSync(path)
      writeFileSync(path + '.br', brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }))
      writeFileSync(path + '.gz', gzipSync(data, { level: 9 }))
    }
  }
}
walk(root)
