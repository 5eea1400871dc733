// queue.js: the waiting room of the watched sale (stats.queue, docs/API.md
// "Waiting room"): queue length, admitted now and in all, and the admission
// rate measured between two polls next to the configured one.
let last = null; // {item, total, at}

export function showQueue(itemID, q) {
  const box = document.getElementById('queue-stats');
  if (!q) { box.hidden = true; last = null; return; }
  box.hidden = false;
  const set = (id, v) => { const e = document.getElementById(id); e.textContent = String(v); e.dataset.value = String(v); };
  set('stat-queue-waiting', q.waiting);
  set('stat-queue-admitted', q.admitted);
  set('stat-queue-total', q.admitted_total);
  const now = performance.now();
  if (last && last.item === itemID && now > last.at) {
    const perMin = Math.round((q.admitted_total - last.total) * 60000 / (now - last.at));
    set('stat-queue-rate', `${perMin} / min (configured ${q.new_users_per_minute}, load factor ${q.load_factor})`);
  } else {
    set('stat-queue-rate', `configured ${q.new_users_per_minute} / min`);
  }
  last = { item: itemID, total: q.admitted_total, at: now };
}
