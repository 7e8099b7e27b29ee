/// <reference types="vitest/config" />
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// `npm run dev` serves the app with hot reload and forwards the API to `missive dev`
// (MISSIVE_URL, default http://127.0.0.1:8080), so both share one origin as in production.
const api = process.env.MISSIVE_URL ?? 'http://127.0.0.1:8080'

export default defineConfig({
  plugins: [vue()],
  server: {
    proxy: { '/api': { target: api, changeOrigin: false } },
  },
  build: {
    // Hashed names under /assets: served with a year-long immutable cache.
    assetsDir: 'assets',
    sourcemap: false,
    chunkSizeWarningLimit: 300,
  },
  test: {
    environment: 'jsdom',
    include: ['tests/unit/**/*.test.ts'],
  },
})
