// api.js: the JSON API of the edge (docs/API.md), with the session cookie.

export class ApiError extends Error {
  constructor(status, code, detail, retryAfter) {
    super(detail || code);
    this.status = status; // 0: the request did not reach the shop
    this.code = code;
    this.detail = detail || '';
    this.retryAfter = retryAfter; // seconds (429 and 503)
  }
  get retryable() { return this.status === 429 || this.status === 503; }
  get network() { return this.status === 0; }
}

// api sends one request and returns the decoded JSON body (null when
// empty); any status >= 400 throws an ApiError carrying the problem code.
export async function api(method, path, body, { signal, headers } = {}) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', signal, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', String(e.message || e));
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    let after = parseInt(res.headers.get('Retry-After') || '', 10);
    if (!(after >= 0) && data && data.retry_after > 0) after = data.retry_after;
    if (!(after >= 0)) after = 1;
    const err = new ApiError(res.status, (data && data.code) || `http_${res.status}`, data && data.detail, after);
    err.orderRef = res.headers.get('X-Order-Ref') || '';
    throw err;
  }
  return data;
}

// sleep resolves after ms, or rejects with an AbortError when signal aborts.
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) { reject(new DOMException('aborted', 'AbortError')); return; }
    const t = setTimeout(() => { if (signal) signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    function onAbort() { clearTimeout(t); reject(new DOMException('aborted', 'AbortError')); }
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
  });
}

// parseTime parses an RFC 3339 time with any number of fractional digits
// into milliseconds since the epoch.
export function parseTime(s) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(s || '');
  if (!m) return Date.parse(s);
  const frac = m[2] ? Number(('0.' + m[2]).slice(0, 8)) * 1000 : 0;
  return Date.parse(m[1] + m[3]) + frac;
}
