// The xov dashboard. Talks to the node's local API (same origin, token cookie) and follows its event
// stream (/v1/events) for live updates; it never polls the node in a loop.
"use strict";

const $ = (s) => document.querySelector(s);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k ?? ""));
  return e;
};
const short = (s, n = 12) => (s || "").slice(0, n);
const now = () => Math.floor(Date.now() / 1000);

const state = { offers: [], leases: new Map(), current: null, warned: new Set() };

async function api(path, opts = {}) {
  const init = { credentials: "same-origin", headers: {} };
  if (opts.body !== undefined) {
    init.method = opts.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  } else if (opts.method) {
    init.method = opts.method;
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = text; }
  if (r.status === 401) { $("#login").classList.remove("hidden"); }
  if (!r.ok) throw new Error((v && v.message) || `HTTP ${r.status}`);
  return v;
}

// ---------------------------------------------------------------- tabs
function show(tab) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll("section.tab").forEach((s) => s.classList.toggle("hidden", s.id !== `tab-${tab}`));
  const load = { offers: loadOffers, leases: loadLeases, wallet: loadWallet, pools: loadPools, peers: loadPeers }[tab];
  if (load) load().catch(() => {});
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

// ---------------------------------------------------------------- offers
async function loadOffers() {
  const f = new FormData($("#offer-filters"));
  const q = new URLSearchParams();
  for (const [k, v] of f.entries()) if (v !== "" && k !== "sort") q.set(k, v);
  const offers = await api(`/v1/offers?${q}`);
  const sort = f.get("sort") || "price";
  const key = sort.replace("-", "") === "price" ? "price_sats_per_hour" : sort.replace("-", "");
  const dir = sort.startsWith("-") ? -1 : 1;
  offers.sort((a, b) => dir * (a[key] - b[key]) || a.price_sats_per_hour - b.price_sats_per_hour);
  state.offers = offers;
  const body = $("#offers-table tbody");
  body.replaceChildren(...offers.map((o, i) => el("tr", { "data-offer": o.id },
    el("td", { class: "price" }, String(o.price_sats_per_hour)),
    el("td", {}, String(o.vcpus)), el("td", {}, String(o.ram_mib)), el("td", {}, String(o.disk_gib)),
    el("td", {}, o.gpu_model ? `${o.gpu_count}× ${o.gpu_model}` : "–"),
    el("td", {}, o.images.join(", ")),
    el("td", {}, [o.country, o.region].filter(Boolean).join(" / ")),
    el("td", { class: "mono", title: o.provider }, short(o.provider)),
    el("td", {}, String(o.capacity)),
    el("td", {}, el("button", { class: "order", onclick: () => openOrder(i) }, "Order")))));
  $("#offers-empty").classList.toggle("hidden", offers.length > 0);
}
$("#offer-filters").addEventListener("submit", (e) => { e.preventDefault(); loadOffers().catch(showError("#order-error")); });
$("#offer-sort").addEventListener("change", () => loadOffers().catch(() => {}));

let ordering = null;
function openOrder(i) {
  ordering = state.offers[i];
  const o = ordering;
  $("#order-offer").textContent = `${o.vcpus} vCPU, ${o.ram_mib} MiB RAM, ${o.disk_gib} GiB disk at ${o.price_sats_per_hour} sats/h from ${short(o.provider)}… (leases ${Math.ceil(o.min_lease_secs / 3600)} to ${Math.floor(o.max_lease_secs / 3600)} h)`;
  $("#order-image").replaceChildren(...o.images.map((im) => el("option", { value: im }, im)));
  $("#order-error").textContent = "";
  $("#order-panel").classList.remove("hidden");
  $("#order-ssh-key").focus();
}
const showError = (sel) => (e) => { $(sel).textContent = e.message; };

$("#order-submit").addEventListener("click", async () => {
  const o = ordering;
  if (!o) return;
  const btn = $("#order-submit");
  btn.disabled = true;
  $("#order-error").textContent = "";
  try {
    // The offer picked, and no other: its provider, its GPU, its place. The price is capped at what the
    // buyer saw, so a re-signed dearer version fails the order rather than costing more.
    const req = {
      pool: o.pool, offer: o.key,
      image: $("#order-image").value, max_price: o.price_sats_per_hour,
      hours: parseInt($("#order-hours").value, 10) || 1,
      ssh_public_key: $("#order-ssh-key").value.trim(),
      refund_address: $("#order-refund").value.trim() || null,
      pay: false,
    };
    if (!req.ssh_public_key) throw new Error("paste your SSH public key: the machine only accepts that key");
    const lease = await api("/v1/orders", { body: req });
    state.leases.set(lease.id, lease);
    $("#order-panel").classList.add("hidden");
    state.current = lease.id;
    renderLeases();
    show("leases");
  } catch (e) {
    $("#order-error").textContent = e.message;
  } finally {
    btn.disabled = false;
  }
});

// ---------------------------------------------------------------- leases
const STEPS = [["invoiced", "invoice issued"], ["payment_seen", "payment seen"], ["funded", "payment confirmed"],
  ["provisioning", "machine launching"], ["running", "machine running"]];
const ORDER = ["ordered", "invoiced", "payment_seen", "funded", "provisioning", "running", "warned", "grace", "halted", "closed"];

function left(l) {
  if (!l.runs_until) return "–";
  const s = l.runs_until - now();
  if (s <= 0) return "funds used up";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}

async function loadLeases() {
  const list = await api("/v1/leases");
  state.leases = new Map(list.map((l) => [l.id, l]));
  renderLeases();
}

function renderLeases() {
  const list = [...state.leases.values()].sort((a, b) => (b.history[0]?.at || 0) - (a.history[0]?.at || 0));
  $("#leases-table tbody").replaceChildren(...list.map((l) => {
    const hours = el("input", { type: "number", min: "1", value: "1", size: "3", class: "topup-hours" });
    const topup = el("button", { class: "secondary topup", onclick: async (ev) => {
      ev.stopPropagation();
      topup.disabled = true;
      try { const r = await api(`/v1/leases/${l.id}/extend`, { body: { hours: parseInt(hours.value, 10) || 1 } }); topup.textContent = `paid ${short(r.txid, 8)}…`; }
      catch (e) { topup.textContent = e.message; }
    } }, "Top up");
    const canTop = l.role === "buyer" && ["running", "warned", "grace", "halted", "payment_seen", "funded", "provisioning"].includes(l.state);
    return el("tr", { "data-lease": l.id, onclick: () => openLease(l.id) },
      el("td", { class: "mono" }, short(l.id)), el("td", {}, l.role),
      el("td", {}, el("span", { class: `state ${l.state}` }, l.state)),
      el("td", { class: "mono" }, l.instance ? (l.instance.addresses.length ? `${l.instance.user}@${l.instance.addresses.join(", ")}` : `server ${short(l.instance.server_id, 8)}`) : "–"),
      el("td", { class: "left", "data-until": l.runs_until || "" }, left(l)),
      el("td", {}, String(l.paid_sat)), el("td", {}, String(l.price_sats_per_hour)),
      el("td", {}, canTop ? el("span", {}, hours, " h ", topup) : ""));
  }));
  $("#leases-empty").classList.toggle("hidden", list.length > 0);
  renderInvoice();
}

function openLease(id) {
  state.current = id;
  show("leases");
  renderInvoice();
}

function renderInvoice() {
  const l = state.leases.get(state.current);
  $("#invoice").classList.toggle("hidden", !l);
  if (!l) return;
  $("#invoice").dataset.lease = l.id;
  $("#invoice-lease").textContent = `${short(l.id)}… (${l.role}, ${l.state})`;
  $("#invoice-amount").textContent = String(l.amount_sat);
  $("#invoice-address").textContent = l.pay_address || "";
  $("#invoice-uri").textContent = l.pay_uri || "";
  if (l.pay_uri && $("#invoice-qr").dataset.uri !== l.pay_uri) {
    $("#invoice-qr").dataset.uri = l.pay_uri;
    $("#invoice-qr").src = `/v1/qr.svg?data=${encodeURIComponent(l.pay_uri)}`;
  }
  $("#invoice-pay-from-wallet").classList.toggle("hidden", !(l.role === "buyer" && l.pay_uri && l.state === "invoiced"));
  const at = ORDER.indexOf(l.state);
  $("#progress").replaceChildren(...STEPS.map(([s, label]) => {
    const i = ORDER.indexOf(s);
    const step = l.history.find((h) => h.state === s);
    const cls = l.state === s ? "now" : (at > i && at >= 0) ? "done" : "";
    return el("li", { class: cls, "data-step": s }, label + (step ? ` — ${new Date(step.at * 1000).toLocaleTimeString()}: ${step.detail}` : ""));
  }));
  const i = l.instance;
  $("#vm-address").textContent = !i ? "" : i.addresses.length ? i.addresses.join(", ") : `server ${i.server_id}`;
  $("#vm-login").textContent = !i ? "waiting for the machine"
    : i.addresses.length ? `ssh ${i.user}@${i.addresses[0]}` : "the cloud assigned no IP address to this machine";
  $("#invoice-left").textContent = left(l);
}

$("#invoice-pay-from-wallet").addEventListener("click", () => {
  const l = state.leases.get(state.current);
  if (!l) return;
  show("wallet");
  $("#pay-uri").value = l.pay_uri;
  $("#pay-result").textContent = "";
});

// The countdowns tick in the page; the node is not asked again for them.
setInterval(() => {
  document.querySelectorAll("#leases-table td.left").forEach((td) => {
    const u = parseInt(td.dataset.until, 10);
    if (u) td.textContent = left({ runs_until: u });
  });
  const l = state.leases.get(state.current);
  if (l) $("#invoice-left").textContent = left(l);
}, 1000);

// ---------------------------------------------------------------- wallet
async function loadWallet() {
  try {
    const b = await api("/v1/wallet/balance");
    $("#wallet-balance").textContent = `${b.confirmed_sat} sat confirmed, ${b.pending_sat} pending, ${b.immature_sat} immature (${b.network}, height ${b.tip_height})`;
    const c = b.chain;
    const tips = `wallet ${c.wallet_tip}, headers ${c.header_tip ?? "?"}, peers ${c.peer_tip ?? "?"}`;
    const restarts = c.restarts ? `; restarted ${c.restarts}× (last: ${c.last_restart_reason ?? "?"})` : "";
    $("#wallet-chain").textContent = `Chain: ${c.source} ${c.state}, ${c.peers} peer(s), ${tips}, ${c.secs_since_progress} s since progress${restarts}${c.last_warning ? "; last warning: " + c.last_warning : ""}`;
    $("#wallet-chain").dataset.state = c.state;
  } catch (e) { $("#wallet-balance").textContent = e.message; return; }
  const h = await api("/v1/wallet/history");
  $("#history-table tbody").replaceChildren(...h.map((t) => el("tr", {},
    el("td", { class: "mono" }, t.txid), el("td", {}, String(t.received_sat)), el("td", {}, String(t.sent_sat)),
    el("td", {}, t.fee_sat == null ? "–" : String(t.fee_sat)), el("td", {}, String(t.confirmations)))));
}
$("#wallet-new-address").addEventListener("click", async () => {
  try {
    const a = await api("/v1/wallet/address", { method: "POST" });
    $("#wallet-address").textContent = a.address;
    $("#wallet-address-qr").src = `/v1/qr.svg?data=${encodeURIComponent(a.uri)}`;
    $("#wallet-address-qr").classList.remove("hidden");
  } catch (e) { $("#wallet-address").textContent = e.message; }
});
$("#pay-submit").addEventListener("click", async () => {
  const btn = $("#pay-submit");
  btn.disabled = true;
  $("#pay-result").textContent = "paying…";
  try {
    const r = await api("/v1/wallet/pay", { body: { uri: $("#pay-uri").value.trim() } });
    $("#pay-result").textContent = `paid: ${r.txid}`;
    $("#pay-result").dataset.txid = r.txid;
    loadWallet().catch(() => {});
  } catch (e) {
    $("#pay-result").textContent = e.message;
  } finally {
    btn.disabled = false;
  }
});
$("#send-submit").addEventListener("click", async () => {
  try {
    const r = await api("/v1/wallet/send", { body: { address: $("#send-address").value.trim(), amount_sat: parseInt($("#send-amount").value, 10) } });
    $("#send-result").textContent = `sent: ${r.txid}`;
  } catch (e) { $("#send-result").textContent = e.message; }
});

// ---------------------------------------------------------------- pools, peers, doctor
async function loadPools() {
  const pools = await api("/v1/pools");
  $("#pools-table tbody").replaceChildren(...pools.map((p) => el("tr", {},
    el("td", {}, p.name), el("td", { class: "mono", title: p.id }, short(p.id)), el("td", {}, p.joined ? "yes" : "no"),
    el("td", {}, String(p.members_seen)), el("td", {}, String(p.offers)),
    el("td", { class: "mono" }, p.publish.map((x) => short(x)).join(", ")),
    el("td", {}, String(p.min_price_step_sats)), el("td", {}, `${p.min_ttl_secs}–${p.max_ttl_secs}`),
    el("td", { class: "mono", title: p.founder }, short(p.founder)))));
}
async function loadPeers() {
  const peers = await api("/v1/peers");
  // Trust from receipts and bonds (xov trust show), one request per peer with a node id.
  const trust = await Promise.all(peers.map((p) => p.node_id ? api(`/v1/trust/${p.node_id}`).catch(() => null) : null));
  $("#peers-table tbody").replaceChildren(...peers.map((p, i) => { const t = trust[i]; return el("tr", {},
    el("td", { class: "mono", title: p.peer_id }, short(p.peer_id, 16)), el("td", { class: "mono" }, short(p.node_id, 16)),
    el("td", { title: t ? t.explanation : "" }, t ? `${t.report.tier} (${t.report.score})` : "–"),
    el("td", {}, t && t.report.bond ? (t.report.bond.spent ? "spent" : `${t.report.bond_value_sats} sats`) : "none"),
    el("td", {}, p.connected ? "yes" : "no"), el("td", {}, p.gossip_score == null ? "–" : p.gossip_score.toFixed(2)),
    el("td", {}, String(p.penalty)), el("td", {}, p.banned ? "BANNED" : "no"), el("td", {}, String(p.pools.length))); }));
}
$("#doctor-run").addEventListener("click", async () => {
  $("#doctor-summary").textContent = "checking (asks peers, the chain source and the cloud; up to 10 s)…";
  try {
    const r = await api("/v1/doctor");
    $("#doctor-summary").textContent = r.healthy ? "all checks passed" : `${r.failures} failed, ${r.warnings} warnings`;
    $("#doctor-table tbody").replaceChildren(...r.checks.map((c) => el("tr", { "data-check": c.name },
      el("td", {}, c.name), el("td", { class: `lvl-${c.status}` }, c.status), el("td", {}, c.detail), el("td", {}, c.fix || ""))));
  } catch (e) { $("#doctor-summary").textContent = e.message; }
});

// ---------------------------------------------------------------- drain banners
function banner(w) {
  const key = `${w.lease_id}/${w.state}`;
  if (state.warned.has(key)) return;
  state.warned.add(key);
  const b = el("div", { class: `banner ${w.state}`, "data-lease": w.lease_id },
    el("b", {}, "Funds running out: "), w.message,
    el("button", { class: "secondary", onclick: () => { openLease(w.lease_id); } }, "Top up"),
    el("button", { class: "secondary", onclick: () => b.remove() }, "Dismiss"));
  $("#banners").append(b);
}
function bannersFromLeases() {
  for (const l of state.leases.values()) {
    if (["warned", "grace", "halted"].includes(l.state)) {
      banner({ lease_id: l.id, state: l.state, message: `lease ${short(l.id)} is ${l.state}; pay ${l.pay_address || "its address"} to extend it` });
    }
  }
}

// ---------------------------------------------------------------- live updates
let walletRefresh = null;
function connect() {
  const es = new EventSource("/v1/events");
  es.onopen = () => { $("#live").textContent = "live"; $("#live").className = "pill on"; };
  es.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "pill off"; };
  es.addEventListener("lease", (m) => {
    const e = JSON.parse(m.data);
    state.leases.set(e.lease.id, e.lease);
    renderLeases();
  });
  es.addEventListener("drain_warning", (m) => banner(JSON.parse(m.data)));
  es.addEventListener("wallet", () => {
    // Coalesce bursts (a block touches many invoices) into one refresh.
    clearTimeout(walletRefresh);
    walletRefresh = setTimeout(() => { if (!$("#tab-wallet").classList.contains("hidden")) loadWallet().catch(() => {}); }, 300);
  });
  es.addEventListener("lagged", () => { loadLeases().catch(() => {}); });
}

(async function start() {
  try {
    const s = await api("/v1/status");
    $("#node-id").textContent = `node ${short(s.node_id, 16)}… · v${s.version} · ${s.network.connected_peers} peers`;
  } catch (_) { return; }
  connect();
  await loadLeases().catch(() => {});
  bannersFromLeases();
  show("offers");
})();
