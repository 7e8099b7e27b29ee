import { createApp } from 'vue'
import App from './App.vue'
import './style.css'
import { loadConfig, startTracing } from './telemetry'

// Tracing starts before the app so the first API calls are traced too.
loadConfig()
  .then(startTracing)
  .catch(() => false)
  .finally(() => createApp(App).mount('#app'))
