// Karpetrack web view: plain JS, no build step. It reads the JSON API (relative URLs, so it works
// behind kubectl port-forward and a sub-path proxy) and nothing else, polling with ETags.
'use strict';

const POLL_MS = 5000;
const ROW_PX = 30;
const HOURS_PER_MONTH = 730;
const GiB = 1024 ** 3;

const state = {
  summary: null, recs: null, nodes: null, etags: {},
  view: [], selected: 0, lastOk: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

// ---- units ------------------------------------------------------------------------------------

function money(d) {
  const a = Math.abs(d);
  return (d < 0 ? '−' : '') + (a >= 100 ? a.toFixed(0) : a >= 1 ? a.toFixed(2) : a.toFixed(4));
}
const dollars = (d) => (d < 0 ? `−$${money(-d)}` : `$${money(d)}`);
const perHour = (d) => `${dollars(d)}/h`;
const perMonth = (d) => `${dollars(d * HOURS_PER_MONTH)}/mo`;
const pct = (r) => `${(r * 100).toFixed(r < 0.1 ? 1 : 0)}%`;

function amount(resource, v) {
  if (resource === 'cpu') return `${+v.toFixed(v < 10 ? 2 : 1)}`;
  if (resource === 'memory' || resource === 'ephemeral-storage') return `${+(v / GiB).toFixed(v < 10 * GiB ? 2 : 1)}`;
  return `${+v.toFixed(2)}`;
}
const unit = (resource) => (resource === 'cpu' ? 'cores' : resource === 'memory' || resource === 'ephemeral-storage' ? 'GiB' : '');
const usageText = (r) => `${amount(r.resource, r.allocated)}/${amount(r.resource, r.allocatable)} ${unit(r.resource)}`.trim();

function age(iso) {
  if (!iso) return 'never';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

const typeName = (t) => String(t).replace('RECOMMENDATION_TYPE_', '').toLowerCase();

function bar(r, big) {
  const ratio = r.allocatable > 0 ? r.allocated / r.allocatable : 0;
  const fill = el('i');
  fill.style.width = `${Math.min(100, ratio * 100)}%`;
  // The figures sit beside the bar, never on its fill, so that they stay readable at any fill.
  return el('div', { class: `meter${ratio > 1 ? ' over' : ''}`, title: `${r.resource}: ${usageText(r)} (${pct(ratio)})` },
    el('div', { class: 'bar' }, fill), el('b', {}, big ? `${r.resource} ${pct(ratio)} · ${usageText(r)}` : `${pct(ratio)} ${usageText(r)}`));
}

// ---- fetching -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) { super(body && body.message ? body.message : `HTTP ${status}`); this.status = status; }
}

async function api(path, { etagKey } = {}) {
  const res = await fetch(path, { cache: 'no-cache', headers: { Accept: 'application/json' } });
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch { /* not JSON: keep the status */ }
    throw new ApiError(res.status, body);
  }
  const tag = res.headers.get('etag');
  if (etagKey && tag && state.etags[etagKey] === tag) return null;   // unchanged since the last render
  const json = await res.json();
  if (etagKey) state.etags[etagKey] = tag;
  return json;
}

async function poll() {
  // Each part renders on its own: before the first plan the recommendations answer 503, and the
  // summary and node map are worth showing meanwhile.
  const [summary, recs, nodes] = await Promise.allSettled([
    api('v1/summary'), api('v1/recommendations', { etagKey: 'recs' }), api('v1/nodes', { etagKey: 'nodes' }),
  ]);
  if (summary.status === 'fulfilled') { state.summary = summary.value; renderSummary(); }
  if (recs.status === 'fulfilled' && recs.value) { state.recs = recs.value; renderRecs(); }
  if (state.summary) renderActuation();
  if (nodes.status === 'fulfilled' && nodes.value) { state.nodes = nodes.value; renderFilters(); applyView(); }
  const failed = [summary, recs, nodes].find((r) => r.status === 'rejected');
  if (!failed) {
    state.lastOk = new Date();
    setStatus(`live · updated ${state.lastOk.toLocaleTimeString()}`);
  } else if (failed.reason.status === 503) {
    setStatus(`waiting: ${failed.reason.message}`);
  } else {
    setStatus(`error: ${failed.reason.message}${state.lastOk ? ` (last update ${state.lastOk.toLocaleTimeString()})` : ''}`, true);
  }
  document.body.dataset.updated = String(Date.now());
}

function setStatus(text, error) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', !!error);
}

// ---- cluster ------------------------------------------------------------------------------------

function tile(k, v, sub, cls) {
  return el('div', { class: 'tile' }, el('div', { class: 'k' }, k), el('div', { class: `v ${cls || ''}` }, v), sub ? el('div', { class: 's' }, sub) : null);
}

// The cost outlook of GetSummary: the cost once every recommendation is carried out, and a proven
// lower bound on hosting every pod on the allowed classes. Both are absent before the first plan.
const COST_OUTLOOK = [
  ['costAfterRecommendationsPerHour', 'After recommendations'],
  ['costLowerBoundPerHour', 'Cheapest possible'],
];

function renderSummary() {
  const s = state.summary;
  const tiles = [
    tile('Cost', perHour(s.costPerHour), perMonth(s.costPerHour)),
    tile('Idle cost', perHour(s.idleCostPerHour), `${s.costPerHour > 0 ? pct(s.idleCostPerHour / s.costPerHour) : '0%'} of the bill`),
  ];
  for (const [key, label] of COST_OUTLOOK) {
    if (typeof s[key] !== 'number') continue;
    const above = s[key] > 0 && s.costPerHour > s[key] ? ` · today ${pct((s.costPerHour - s[key]) / s[key])} above` : '';
    tiles.push(tile(label, perHour(s[key]), perMonth(s[key]) + above));
  }
  tiles.push(
    s.planReady === false
      ? tile('Could save', 'not computed yet', 'the first plan waits for the price book')
      : tile('Could save', perHour(s.potentialSavingsPerHour), `${perMonth(s.potentialSavingsPerHour)} · ${s.recommendations} recommendations`, s.potentialSavingsPerHour > 0 ? 'good' : ''),
    tile('Nodes', `${s.nodes}`, `${s.readyNodes} ready${s.unpricedNodes ? ` · ${s.unpricedNodes} unpriced` : ''}`, s.unpricedNodes ? 'bad' : ''),
    tile('Pods', `${s.pods}`),
    tile('Pending pods', `${s.pendingPods}`, s.pendingPods ? `new nodes: ${perHour(s.provisioningCostPerHour)}` : 'none unschedulable', s.pendingPods ? 'bad' : ''),
  );
  $('tiles').replaceChildren(...tiles);
  $('usage').replaceChildren(...s.resources.map((r) => bar(r, true)));
  const pb = s.priceBook || {};
  const unsynced = (s.caches || []).filter((c) => !c.synced).map((c) => c.resource);
  $('facts').replaceChildren(
    'Prices: ', el('span', { class: pb.stale ? 'stale' : '' }, `${pb.embedded ? 'embedded snapshot' : pb.source || '?'}, ${age(pb.fetchedAt)}${pb.stale ? ' (stale)' : ''}`),
    ` · ${pb.classes} classes${s.region ? ` · region ${s.region}` : ''} · plan ${age(s.planComputedAt)} · caches: `,
    el('span', { class: unsynced.length ? 'bad' : 'good' }, unsynced.length ? `syncing ${unsynced.join(', ')}` : 'all synced'),
    ` · pending requests: ${(s.pendingRequests || []).map((r) => `${amount(r.resource, r.amount)} ${unit(r.resource) || r.resource}`).join(', ') || 'none'}`,
  );
}

// ---- recommendations ------------------------------------------------------------------------------

function newNodesText(r) { return r.newNodes.map((n) => `${n.count}× ${n.serverClass}`).join(', ') || '–'; }

function renderRecs() {
  const recs = state.recs.recommendations;
  $('rec-count').textContent = `(${recs.length})`;
  const rows = recs.map((r) => el('tr', {
    tabindex: '0', 'data-id': r.id,
    onclick: () => explainRec(r.id),
    onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); explainRec(r.id); } },
  },
  el('td', {}, typeName(r.type)),
  el('td', {}, r.nodes.length ? r.nodes.join(', ') : `${r.pendingPods.length} pending pods`),
  el('td', {}, newNodesText(r)),
  el('td', { class: 'num' }, money(r.savingsPerHour)),
  el('td', { class: 'num' }, money(r.savingsPerMonth)),
  el('td', { class: 'num' }, String(r.podsEvicted)),
  el('td', {}, r.reasons[0] || '', r.waiting ? el('span', { class: 'waiting' }, ` (${r.waiting})`) : null)));
  $('rec-rows').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '7' }, 'No recommendations: nothing cheaper was found.'))]));
  const un = state.recs.unplaceable || [];
  $('unplaceable').textContent = un.length ? `${un.length} pending pods fit no allowed class, e.g. ${un[0].pod}: ${un[0].reason}` : '';
}

function renderActuation() {
  const mode = state.summary.actuationMode || 'off';
  $('actuation').hidden = mode === 'off';
  if (mode === 'off' || !state.recs) return;
  $('actuation-mode').textContent = `Mode: ${mode}.`;
  const acted = state.recs.recommendations.filter((r) => r.actuationState);
  $('actuation-rows').replaceChildren(...acted.map((r) => el('tr', { tabindex: '0', onclick: () => explainRec(r.id) },
    el('td', {}, r.id), el('td', {}, typeName(r.type)), el('td', {}, r.actuationState))));
  const recent = state.summary.recentActions || [];
  $('recent-rows').replaceChildren(...recent.map((a) => el('tr', { 'data-id': a.recommendationId },
    el('td', {}, a.endedAt ? new Date(a.endedAt).toLocaleTimeString() : ''), el('td', {}, a.recommendationId),
    el('td', {}, a.type.replace('_', ' ')), el('td', {}, a.state))));
  const refusals = state.summary.actuationRefusals || [];
  $('actuation-refusals').textContent = refusals.length
    ? `Refused so far: ${refusals.map((r) => `${r.reason.replaceAll('_', ' ')} ${r.count}`).join(', ')}.`
    : 'No refusals so far.';
}

// ---- node map ---------------------------------------------------------------------------------------

function groupKeys() { return (state.nodes.labelGroups || [])[0] ? state.nodes.labelGroups[0].split(',') : []; }
function groupValue(n) { return groupKeys().map((k) => n.labels[k] || '').join(','); }
function maxUtil(n) { return n.resources.reduce((m, r) => Math.max(m, r.utilization), 0); }
function isBlocked(n) { return n.blockers.some((b) => b !== 'no_cheaper_shape' && b !== 'receives_consolidated_pods'); }

function fillSelect(select, values) {
  const current = select.value;
  const wanted = ['', ...values];
  if (select.options.length === wanted.length && [...select.options].every((o, i) => o.value === wanted[i])) return;
  select.replaceChildren(el('option', { value: '' }, 'all'), ...values.map((v) => el('option', { value: v }, v || '(none)')));
  select.value = wanted.includes(current) ? current : '';
}

function renderFilters() {
  const nodes = state.nodes.nodes;
  fillSelect($('f-class'), [...new Set(nodes.map((n) => n.serverClass))].sort());
  const keys = groupKeys();
  $('f-group-label').hidden = keys.length === 0;
  if (keys.length) {
    $('f-group-name').textContent = keys.join(',');
    fillSelect($('f-group'), [...new Set(nodes.map(groupValue))].sort());
  }
  const view = $('f-view');
  if (keys.length && view.options.length === 2) view.append(el('option', { value: 'group' }, `one row per ${keys.join(',')}`));
}

function matches(n, f) {
  if (f.text && !(n.name.includes(f.text) || n.serverClass.includes(f.text) || n.pool.includes(f.text))) return false;
  if (f.cls && n.serverClass !== f.cls) return false;
  if (f.group && groupValue(n) !== f.group) return false;
  switch (f.state) {
    case '': return true;
    case 'managed': return n.managed;
    case 'blocked': return isBlocked(n);
    case 'recommended': return n.recommendationIds.length > 0;
    default: return n.state === f.state;
  }
}

const SORTS = {
  util: (n) => maxUtil(n), price: (n) => n.pricePerHour, idle: (n) => n.idleCostPerHour,
  class: (n) => n.serverClass, name: (n) => n.name,
};

// One row per class or label-group value: the same bars, summed. At 5,000 nodes this is the overview.
function aggregate(nodes, keyOf) {
  const groups = new Map();
  for (const n of nodes) {
    const key = keyOf(n);
    let g = groups.get(key);
    if (!g) {
      g = { aggregate: true, name: key || '(none)', key, serverClass: '', capacityType: '', pricePerHour: 0, idleCostPerHour: 0, pods: 0, count: 0,
        resources: n.resources.map((r) => ({ resource: r.resource, allocated: 0, allocatable: 0, utilization: 0 })), states: {} };
      groups.set(key, g);
    }
    g.count++; g.pods += n.pods; g.pricePerHour += n.pricePerHour; g.idleCostPerHour += n.idleCostPerHour;
    n.resources.forEach((r, i) => { if (g.resources[i]) { g.resources[i].allocated += r.allocated; g.resources[i].allocatable += r.allocatable; } });
    g.states[n.state] = (g.states[n.state] || 0) + 1;
  }
  for (const g of groups.values()) for (const r of g.resources) r.utilization = r.allocatable > 0 ? r.allocated / r.allocatable : 0;
  return [...groups.values()];
}

function applyView() {
  if (!state.nodes) return;
  const f = { text: $('f-text').value.trim(), cls: $('f-class').value, group: $('f-group').value, state: $('f-state').value };
  let rows = state.nodes.nodes.filter((n) => matches(n, f));
  const mode = $('f-view').value;
  if (mode === 'class') rows = aggregate(rows, (n) => n.serverClass);
  else if (mode === 'group') rows = aggregate(rows, groupValue);
  const key = SORTS[$('f-sort').value] || SORTS.util;
  const dir = $('f-desc').checked ? -1 : 1;
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * dir || (a.name < b.name ? -1 : 1); });
  state.view = rows;
  state.selected = Math.min(state.selected, Math.max(0, rows.length - 1));
  const total = state.nodes.nodes.length;
  $('node-count').textContent = mode === 'nodes' ? `(${rows.length} of ${total})` : `(${rows.length} groups of ${total} nodes)`;
  const resources = (state.nodes.nodes[0] || { resources: [] }).resources.map((r) => r.resource);
  $('node-grid').style.setProperty('--cols', `minmax(12rem, 2fr) minmax(8rem, 1.2fr) 4.5rem 5.5rem ${resources.map(() => 'minmax(9rem, 1.5fr)').join(' ')} 3rem minmax(8rem, 1.3fr)`);
  $('node-head').replaceChildren(...[mode === 'nodes' ? 'Node' : 'Group', 'Class', 'Type', '$/h', ...resources, 'Pods', 'State'].map((h) => el('span', {}, h)));
  $('node-spacer').style.height = `${rows.length * ROW_PX}px`;
  renderRows();
}

function flags(n) {
  if (n.aggregate) return Object.entries(n.states).map(([s, c]) => el('span', { class: `flag ${s}` }, `${c} ${s}`));
  const out = [];
  if (n.state !== 'ready') out.push(el('span', { class: `flag ${n.state}` }, n.state === 'not_ready' ? 'NotReady' : n.state));
  if (n.managed) out.push(el('span', { class: 'flag managed' }, 'managed'));
  if (n.recommendationIds.length) out.push(el('span', { class: 'flag recommended' }, 'recommended'));
  if (isBlocked(n)) out.push(el('span', { class: 'flag blocked', title: n.blockers.join(', ') }, `blocked: ${n.blockers[0]}`));
  return out;
}

// Only the rows in sight exist in the DOM: 5,000 nodes cost as much to draw as forty.
function renderRows() {
  const vp = $('node-viewport');
  const first = Math.max(0, Math.floor(vp.scrollTop / ROW_PX) - 5);
  const last = Math.min(state.view.length, Math.ceil((vp.scrollTop + vp.clientHeight) / ROW_PX) + 5);
  const rows = [];
  for (let i = first; i < last; i++) {
    const n = state.view[i];
    const row = el('div', {
      class: `row${i === state.selected ? ' sel' : ''}`, role: 'option', id: `node-row-${i}`, 'aria-selected': i === state.selected ? 'true' : 'false',
      'data-node': n.aggregate ? null : n.name, onclick: () => { state.selected = i; openRow(i); },
    },
    el('span', { title: n.name }, n.aggregate ? `${n.name} (${n.count} nodes)` : n.name),
    el('span', { title: n.serverClass }, n.serverClass || '–'),
    el('span', {}, n.capacityType || ''),
    el('span', { class: 'num' }, n.aggregate || n.priced ? money(n.pricePerHour) : 'unpriced'),
    ...n.resources.map((r) => bar(r, false)),
    el('span', { class: 'num' }, String(n.pods)),
    el('span', { class: 'flags' }, flags(n)));
    row.style.transform = `translateY(${i * ROW_PX}px)`;
    row.style.position = 'absolute';
    row.style.left = '0'; row.style.right = '0';
    rows.push(row);
  }
  $('node-rows').replaceChildren(...rows);
  vp.setAttribute('aria-activedescendant', `node-row-${state.selected}`);
}

function openRow(i) {
  const n = state.view[i];
  if (!n) return;
  if (n.aggregate) {
    // A group row narrows the map to its nodes.
    if ($('f-view').value === 'class') $('f-class').value = n.key; else $('f-group').value = n.key;
    $('f-view').value = 'nodes';
    applyView();
    return;
  }
  explainNode(n.name);
}

function moveSelection(delta) {
  const vp = $('node-viewport');
  state.selected = Math.max(0, Math.min(state.view.length - 1, state.selected + delta));
  const top = state.selected * ROW_PX;
  if (top < vp.scrollTop) vp.scrollTop = top;
  else if (top + ROW_PX > vp.scrollTop + vp.clientHeight) vp.scrollTop = top + ROW_PX - vp.clientHeight;
  renderRows();
}

function onGridKey(e) {
  const page = Math.max(1, Math.floor($('node-viewport').clientHeight / ROW_PX) - 1);
  const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page, Home: -Infinity, End: Infinity };
  if (e.key in moves) { e.preventDefault(); moveSelection(Math.max(-1e9, Math.min(1e9, moves[e.key]))); }
  else if (e.key === 'Enter') { e.preventDefault(); openRow(state.selected); }
}

// ---- explanations ------------------------------------------------------------------------------------

function dl(pairs) { return el('dl', {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '').flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])); }
function list(items, f) { return items.length ? el('ul', {}, items.map((x) => el('li', {}, f ? f(x) : x))) : null; }
function nodeLink(name) { return el('button', { class: 'link', type: 'button', onclick: () => explainNode(name) }, name); }
function recLink(id) { return el('button', { class: 'link', type: 'button', onclick: () => explainRec(id) }, id); }

function showDialog(title, body) {
  const d = $('explain');
  $('explain-title').textContent = title;
  $('explain-body').replaceChildren(...body.filter(Boolean));
  if (!d.open) d.showModal();
}

async function explainNode(name) {
  let e;
  try { e = await api(`v1/nodes/${encodeURIComponent(name)}/explain`); } catch (err) { showDialog(name, [el('p', { class: 'bad' }, err.message)]); return; }
  showDialog(`Node ${e.node}`, [
    dl([['class', e.serverClass || '–'], ['capacity type', e.capacityType], ['pool', e.pool], ['region', e.region], ['state', e.state],
      ['pods', String(e.pods)], ['price', e.priced ? `${perHour(e.pricePerHour)} (${perMonth(e.pricePerHour)})` : 'unpriced'],
      ['idle cost', e.priced ? perHour(e.idleCostPerHour) : ''], ['created', e.created ? `${e.created} (${age(e.created)})` : ''],
      ['removable', e.removable ? 'yes' : 'no'], ['replaceable', e.replaceable ? 'yes' : 'no']]),
    el('div', { class: 'usage' }, e.resources.map((r) => bar(r, true))),
    e.recommendationIds.length ? el('h3', {}, 'Recommendations') : null, list(e.recommendationIds, recLink),
    e.blockers.length ? el('h3', {}, 'Blockers') : null,
    list(e.blockers, (b) => [el('strong', {}, b.reason), b.pods.length ? ` pods: ${b.pods.join(', ')}` : '', b.pdbs.length ? ` PDBs: ${b.pdbs.join(', ')}` : '']),
    e.reasons.length ? el('h3', {}, 'Why') : null, list(e.reasons),
  ]);
}

function explainRec(id) {
  const r = state.recs && state.recs.recommendations.find((x) => x.id === id);
  if (!r) { showDialog(id, [el('p', {}, 'This recommendation is no longer in the current plan.')]); return; }
  const moves = r.moves.slice(0, 100);
  showDialog(`${typeName(r.type)} ${r.id}`, [
    dl([['saves', `${perHour(r.savingsPerHour)} (${perMonth(r.savingsPerHour)})`], ['cost now', perHour(r.currentCostPerHour)], ['cost after', perHour(r.newCostPerHour)],
      ['lower bound', r.lowerBoundPerHour ? perHour(r.lowerBoundPerHour) : ''], ['pods evicted', String(r.podsEvicted)],
      ['PDB headroom', r.pdbHeadroom < 0 ? 'no budget touched' : String(r.pdbHeadroom)], ['new nodes', newNodesText(r)],
      ['pending pods served', r.pendingPods.length ? String(r.pendingPods.length) : ''],
      ['waiting', r.waiting ? (r.actionableAt ? `${r.waiting}: actionable at ${new Date(r.actionableAt).toLocaleTimeString()}` : r.waiting) : ''],
      ['expired', r.expired ? 'yes: the node is past --expire-after' : ''], ['actuation', r.actuationState]]),
    r.nodes.length ? el('h3', {}, 'Nodes') : null, list(r.nodes, nodeLink),
    el('h3', {}, 'Why'), list(r.reasons),
    moves.length ? el('h3', {}, `Pod moves${r.moves.length > moves.length ? ` (first ${moves.length} of ${r.moves.length})` : ''}`) : null,
    list(moves, (m) => `${m.namespace}/${m.pod}: ${m.from || 'pending'} → ${m.to}`),
  ]);
}

// ---- start -----------------------------------------------------------------------------------------------

function start() {
  for (const id of ['f-class', 'f-group', 'f-state', 'f-sort', 'f-desc', 'f-view']) $(id).addEventListener('change', () => { state.selected = 0; applyView(); });
  $('f-text').addEventListener('input', () => { state.selected = 0; applyView(); });
  $('f-desc').checked = true;
  const vp = $('node-viewport');
  let frame = 0;
  vp.addEventListener('scroll', () => { if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderRows(); }); });
  vp.addEventListener('keydown', onGridKey);
  window.addEventListener('resize', renderRows);
  poll();
  setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
}

start();
