// prom.js: the little of the Prometheus text format the dashboard needs.

// parseSamples returns [{name, labels, value}] for every sample line.
export function parseSamples(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// edgeCounters picks the purchase counters of the edge: {series: total},
// where series is "accepted" or the rejection reason.
export function edgeCounters(text) {
  const c = {};
  for (const s of parseSamples(text)) {
    if (s.name === 'seckill_edge_purchases_accepted_total') c.accepted = s.value;
    else if (s.name === 'seckill_edge_rejections_total' && s.labels.reason) c[s.labels.reason] = s.value;
  }
  return c;
}

// rates turns two counter snapshots dt seconds apart into per-second rates
// (a counter that went down restarted: its rate counts from zero).
export function rates(prev, cur, dt) {
  const r = {};
  for (const [k, v] of Object.entries(cur)) {
    const before = prev[k] ?? 0;
    const d = v >= before ? v - before : v;
    r[k] = dt > 0 ? d / dt : 0;
  }
  return r;
}
