// The HTTP API (README "HTTP API"): JSON in and out, errors as
// {"error": {"code", "message"}}. Same origin, so the HttpOnly session cookie rides along.

import type { components } from './api/schema'

// The bodies are the server's own types, generated from its OpenAPI document
// (scripts/api-types.sh; CI fails when src/api/schema.d.ts is stale).
type Schemas = components['schemas']

export type Message = Schemas['Message']
export type MessagePage = Schemas['MessagePage']
export type MessageList = Schemas['MessageList']
export type UserBody = Schemas['UserBody']
/** The document types `detail` as a bare object; it holds the event's JSON data. */
export type ActivityEntry = Omit<Schemas['Entry'], 'detail'> & { detail: Record<string, unknown> }
export type ActivityList = { items: ActivityEntry[] }

/** An API error: the server's code and message, and the HTTP status; for 429 and 503,
 * how many seconds to wait (`Retry-After`), which the message then says too. */
export class ApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
    public readonly retryAfter?: number,
  ) {
    super(retryAfter === undefined ? message : `${message} (${waitText(retryAfter)})`)
    this.name = 'ApiError'
  }
}

/** "try again in 5 s", "... in 15 min": the wait a 429 or 503 asks for. */
export function waitText(seconds: number): string {
  if (seconds < 60) return `try again in ${Math.max(1, Math.round(seconds))} s`
  return `try again in ${Math.ceil(seconds / 60)} min`
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date), if the answer has one. */
export function retryAfterSeconds(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined
  const trimmed = header.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed)
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(0, Math.round((at - now) / 1000))
}

type Listener = () => void
const unauthorizedListeners = new Set<Listener>()

/** Called whenever any request answers 401: the app returns to the login screen. */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener)
  return () => unauthorizedListeners.delete(listener)
}

async function request<T>(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  const init: RequestInit = { method, headers: { ...headers }, credentials: 'same-origin' }
  if (body !== undefined) {
    ;(init.headers as Record<string, string>)['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let response: Response
  try {
    response = await fetch(path, init)
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.')
  }
  if (response.status === 204) return undefined as T
  const text = await response.text()
  let json: unknown = undefined
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    // Not JSON (a proxy's error page): reported below with the status.
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } } | undefined)?.error
    if (response.status === 401) unauthorizedListeners.forEach((l) => l())
    const waiting = response.status === 429 || response.status === 503
    throw new ApiError(
      response.status,
      error?.code ?? 'http_' + response.status,
      error?.message ?? `The server answered ${response.status}.`,
      waiting ? retryAfterSeconds(response.headers.get('retry-after')) : undefined,
    )
  }
  return json as T
}

export const api = {
  me: () => request<UserBody>('GET', '/api/auth/me'),
  signup: (username: string, password: string) =>
    request<UserBody>('POST', '/api/auth/signup', { username, password }),
  login: (username: string, password: string) =>
    request<UserBody>('POST', '/api/auth/login', { username, password }),
  /** `everywhere`: end every session of the user (other browsers and devices too). */
  logout: (everywhere = false) =>
    request<void>('POST', '/api/auth/logout', everywhere ? { everywhere } : {}),
  messages: (before?: string | null, limit = 20) => {
    const query = new URLSearchParams({ limit: String(limit) })
    if (before) query.set('before', before)
    return request<MessagePage>('GET', `/api/messages?${query}`)
  },
  /** `idempotencyKey` is per draft: sending the same draft twice creates one message. */
  post: (text: string, idempotencyKey: string) =>
    request<Message>('POST', '/api/messages', { text }, { 'idempotency-key': idempotencyKey }),
  remove: (id: string) => request<void>('DELETE', `/api/messages/${encodeURIComponent(id)}`),
  search: (q: string, limit = 50) =>
    request<MessageList>(
      'GET',
      `/api/messages/search?${new URLSearchParams({ q, limit: String(limit) })}`,
    ),
  activity: () => request<ActivityList>('GET', '/api/activity?limit=50'),
}
