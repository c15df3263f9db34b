"""The review page (HTML, CSS and script in one string: no build step, no asset files).

One sample at a time. Keys: a approve, e edit (the text becomes editable; Ctrl+Enter saves
the edit, Esc cancels), r reject, j / k next / previous, x export. After a decision the page
moves to the next undecided sample. Every decision is sent to the server at once.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>posttrain review</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
 header { background: #263238; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; }
 header h1 { font-size: 17px; margin: 0; }
 main { max-width: 900px; margin: 18px auto; padding: 0 20px; }
 .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 16px 20px; }
 .label { font-size: 12px; text-transform: uppercase; color: #777; margin-top: 12px; }
 .prompt { font-size: 17px; }
 textarea { width: 100%; min-height: 110px; font: 14px/1.4 ui-monospace, monospace; border: 1px solid #ccc;
            border-radius: 4px; padding: 8px; box-sizing: border-box; background: #fafafa; }
 textarea.editing { background: #fffbe6; border-color: #e0a800; }
 .tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; margin-right: 6px; background: #eceff1; }
 .tier-A { background: #c8e6c9; } .tier-B { background: #ffe0b2; }
 .dec-approve { background: #a5d6a7; } .dec-edit { background: #fff59d; } .dec-reject { background: #ef9a9a; }
 .bar button { margin-right: 8px; padding: 6px 14px; border-radius: 4px; border: 1px solid #bbb; background: #fff; cursor: pointer; }
 kbd { border: 1px solid #bbb; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; font-size: 12px; }
 #msg { margin-top: 10px; min-height: 1.4em; color: #555; }
</style></head>
<body>
<header><h1>posttrain review queue</h1><span id="progress"></span><span id="where"></span></header>
<main>
 <div class="card" id="card">
  <div><span class="tag" id="tier"></span><span class="tag" id="decision"></span><span class="tag" id="scores"></span></div>
  <div class="label">prompt</div><div class="prompt" id="prompt"></div>
  <div class="label">reference answer</div><div id="answer"></div>
  <div class="label">model's reasoning path</div>
  <textarea id="completion" readonly></textarea>
  <div class="bar" style="margin-top:12px">
   <button id="approve"><kbd>a</kbd> approve</button><button id="edit"><kbd>e</kbd> edit</button>
   <button id="reject"><kbd>r</kbd> reject</button><button id="prev"><kbd>k</kbd> previous</button>
   <button id="next"><kbd>j</kbd> next</button><button id="export"><kbd>x</kbd> export</button>
  </div>
  <div id="msg"></div>
 </div>
</main>
<script>
let items = [], pos = 0, editing = false;
const $ = id => document.getElementById(id);
async function load() {
  const r = await fetch('/api/items'); const j = await r.json(); items = j.items;
  const first = items.findIndex(it => !it.decision); pos = first < 0 ? 0 : first; show();
}
function show() {
  editing = false; const ta = $('completion'); ta.readOnly = true; ta.classList.remove('editing');
  const done = items.filter(it => it.decision).length;
  $('progress').textContent = done + ' / ' + items.length + ' decided';
  document.body.dataset.decided = String(done);
  if (!items.length) { $('prompt').textContent = 'The queue is empty.'; return; }
  const it = items[pos], rec = it.record;
  $('where').textContent = 'sample ' + (pos + 1) + ' of ' + items.length + ' (' + it.id + ')';
  $('prompt').textContent = typeof rec.prompt === 'string' ? rec.prompt : rec.prompt.map(m => m.content).join('\n');
  $('answer').textContent = rec.answer ?? '';
  $('tier').textContent = 'tier ' + rec.tier + (rec.borderline ? ' (borderline)' : '');
  $('tier').className = 'tag tier-' + rec.tier;
  $('scores').textContent = 'answer ' + fmt(rec.answer_reward) + ' · steps ' + fmt(rec.steps_reward) +
      ' · mean log-prob ' + fmt(rec.mean_logprob) + ' · entropy ' + fmt(rec.entropy);
  $('decision').textContent = it.decision ? it.decision : 'undecided';
  $('decision').className = 'tag' + (it.decision ? ' dec-' + it.decision : '');
  ta.value = it.decision === 'edit' ? it.completion : rec.completion;
  document.body.dataset.current = it.id;
}
function fmt(v) { return v === null || v === undefined ? '-' : Number(v).toFixed(2); }
async function decide(decision, completion) {
  const it = items[pos]; const body = {id: it.id, decision: decision};
  if (decision === 'edit') body.completion = completion;
  const r = await fetch('/api/decide', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) { $('msg').textContent = 'error: ' + j.error; return; }
  it.decision = decision; it.completion = body.completion ?? null;
  $('msg').textContent = it.id + ': ' + decision + ' saved (' + j.pending + ' left)';
  const next = items.findIndex((x, i) => i > pos && !x.decision);
  if (next >= 0) pos = next; show();
}
function startEdit() { editing = true; const ta = $('completion'); ta.readOnly = false; ta.classList.add('editing'); ta.focus(); }
async function doExport() {
  const r = await fetch('/api/export', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
  const j = await r.json(); $('msg').textContent = 'exported ' + j.count + ' decisions to ' + j.path;
}
function move(d) { pos = Math.max(0, Math.min(items.length - 1, pos + d)); show(); }
document.addEventListener('keydown', ev => {
  if (editing) {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); decide('edit', $('completion').value); }
    else if (ev.key === 'Escape') { ev.preventDefault(); show(); }
    return;
  }
  const act = {a: () => decide('approve'), e: startEdit, r: () => decide('reject'), j: () => move(1),
               k: () => move(-1), x: doExport}[ev.key];
  if (act && items.length) { ev.preventDefault(); act(); }
});
$('approve').onclick = () => decide('approve'); $('edit').onclick = startEdit; $('reject').onclick = () => decide('reject');
$('prev').onclick = () => move(-1); $('next').onclick = () => move(1); $('export').onclick = doExport;
load().then(() => { document.body.dataset.ready = '1'; });
</script>
</body></html>
"""
