"""Browser-side behaviour of the HTML views (gr.HTML `js_on_load` snippets).

Clicks are delegated from the component's root element, so they keep working when its content is
re-rendered; a click on anything carrying data-idx sends a 'select' event with that target index.
"""

OPEN_ON_CLICK = """
element.addEventListener('click', (event) => {
  const hit = event.target.closest('[data-idx]');
  if (hit && element.contains(hit)) trigger('select', {idx: Number(hit.dataset.idx)});
});
"""

# The Map's side panel: binds to the plotly graph of #ddcs-map (re-binding whenever gradio redraws it),
# shows the hovered point's image fetched through the `thumb` server function, and opens the target of
# a clicked point.
MAP_PREVIEW = """
const cache = new Map();
let latest = '';
function show(html) { const b = element.querySelector('.ddcs-preview'); if (b) b.innerHTML = html; }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }
async function hover(gd, point) {
  const [kind, pool, index] = point.customdata;
  const run = (gd.layout.meta || {}).run || '';
  const key = [run, kind, pool, index].join('|');
  latest = key;
  const caption = point.hovertext || '';
  let reply = cache.get(key);
  if (!reply) {
    try { reply = await server.thumb([run, kind, pool, index]); } catch (e) { reply = {error: String(e)}; }
    cache.set(key, reply);
  }
  if (latest !== key) return;
  if (reply.src) show(`<img class="ddcs-preview-img" src="${reply.src}" alt="${esc(kind)} ${esc(index)}"><div class="ddcs-preview-cap">${caption}</div>`);
  else show(`<div class="ddcs-preview-cap">${esc(reply.error || 'no image')}</div>`);
}
function bind() {
  const gd = document.querySelector('#ddcs-map .js-plotly-plot');
  if (!gd || !gd.on || gd.__ddcsBound) return;
  gd.__ddcsBound = true;
  gd.on('plotly_hover', (ev) => { if (ev.points && ev.points.length) hover(gd, ev.points[0]); });
  gd.on('plotly_click', (ev) => {
    const p = ev.points && ev.points[0];
    if (p && p.customdata && p.customdata[3] >= 0) trigger('select', {idx: Number(p.customdata[3])});
  });
}
setInterval(bind, 400);
"""
