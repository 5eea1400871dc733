// clock.js: the server's clock, as seen from the page. Each API answer that
// carries `now` is one sample: offset = now - (midpoint of the request on
// the page's monotonic clock). The sample with the smallest round trip of
// the last few wins. The visitor's wall clock is never used, so a wrong or
// changed system clock does not move the countdown.

export class ServerClock {
  constructor() { this.samples = []; this.offset = null; }

  // sample records the server time serverMs (epoch ms) of a request sent
  // at performance.now() t0 and answered at t1.
  sample(serverMs, t0, t1) {
    if (!Number.isFinite(serverMs)) return;
    this.samples.push({ rtt: t1 - t0, offset: serverMs - (t0 + t1) / 2 });
    if (this.samples.length > 5) this.samples.shift();
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offset = best.offset;
  }

  get synced() { return this.offset !== null; }

  // now is the server's time in epoch milliseconds.
  now() { return performance.now() + (this.offset ?? (Date.now() - performance.now())); }
}

// formatRemaining turns milliseconds into "1 d 02:03:04" / "02:03:04" / "03:04".
export function formatRemaining(ms) {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (n) => String(n).padStart(2, '0');
  const hms = h > 0 || d > 0 ? `${two(h)}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
  return d > 0 ? `${d} d ${hms}` : hms;
}
