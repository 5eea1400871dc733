// draw.js: the dashboard's panel of a draw sale (allocation "draw",
// docs/DRAW.md): its state, the number of entries, the commitment, the
// entry-list hash and the seed once published, the rounds of offers, and
// the entry list to download.

const $ = (id) => document.getElementById(id);

function row(label, value, tid) {
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  const c = document.createElement('code');
  c.textContent = value;
  dd.append(c);
  if (tid) dd.dataset.testid = tid;
  return [dt, dd];
}

// showDraw fills #draw-panel with the draw of item id, or hides it when the
// sale is not a draw. admin is the dashboard's authenticated fetch.
export async function showDraw(admin, id) {
  const panel = $('draw-panel');
  let d;
  try {
    d = await admin('GET', `/admin/items/${id}/draw`);
  } catch (e) {
    if (e.code === 'conflict' || e.code === 'not_found') { panel.hidden = true; return; }
    throw e;
  }
  panel.hidden = false;
  panel.dataset.item = String(id);
  panel.dataset.drawState = d.state;
  $('draw-state').textContent = d.state;
  $('draw-entries').textContent = String(d.entries);
  $('draw-entries').dataset.value = String(d.entries);
  const facts = $('draw-facts');
  facts.replaceChildren(
    ...row('Commitment', d.commitment, 'draw-commitment'),
    ...(d.entries_hash ? row('Entry-list hash', d.entries_hash, 'draw-hash') : []),
    ...(d.seed ? row('Seed', d.seed, 'draw-seed') : []),
  );
  const rounds = $('draw-rounds');
  rounds.replaceChildren(...(d.rounds || []).map((r) => {
    const li = document.createElement('li');
    li.textContent = `Round ${r.round}: places ${r.from + 1}–${r.from + r.count} (${r.count}), ${new Date(r.claim_from).toLocaleTimeString()} to ${new Date(r.claim_until).toLocaleTimeString()}`;
    return li;
  }));
  const exp = $('draw-export');
  exp.hidden = !d.entries_hash;
  exp.onclick = async () => {
    const list = await admin('GET', `/admin/items/${id}/draw/entries`);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([JSON.stringify(list, null, 1)], { type: 'application/json' }));
    a.download = `draw-${id}-entries.json`;
    a.click();
    URL.revokeObjectURL(a.href);
  };
}
