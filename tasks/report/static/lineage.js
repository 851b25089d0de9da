(function () {
  "use strict";
  var idx = JSON.parse(document.getElementById("lineage-index").textContent);
  var S = idx.samples, C = idx.classes;
  var out = document.getElementById("lineage-out"), q = document.getElementById("lineage-q");
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(6));
    if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
    if (v !== null && typeof v === "object") return "{" + Object.keys(v).map(function (k) { return k + ": " + fmt(v[k]); }).join(", ") + "}";
    return String(v);
  }
  function kv(o) {
    return Object.keys(o).filter(function (k) { return k !== "op"; }).map(function (k) { return k + "=" + fmt(o[k]); }).join(", ");
  }
  function params(p) {
    if (!p || !Object.keys(p).length) return [];
    if (Array.isArray(p.ops)) return p.ops.length ? p.ops.map(function (o) { return o.op + (kv(o) ? ": " + kv(o) : ""); }) : ["no op drawn (identity)"];
    return [(p.op ? p.op + ": " : "") + kv(p)];
  }
  function cls(i) { return C[i] !== undefined ? i + " " + C[i] : String(i); }
  function card(id, s) {
    var box = el("div", {"class": "lin-card"});
    box.appendChild(el("img", {"class": "thumb", src: s.img, alt: id}));
    var d = el("div");
    d.appendChild(el("div", {"class": "id"}, id));
    var label = "label " + cls(s.label);
    if (s.soft) label += " (soft: " + s.soft.map(function (w, i) { return w > 0 ? fmt(w) + " " + cls(i) : null; }).filter(Boolean).join(" + ") + ")";
    d.appendChild(el("div", {}, s.stage + " / " + s.branch + " / " + s.split + "; " + label));
    var ps = params(s.params);
    if (ps.length) d.appendChild(el("div", {"class": "lin-params"}, ps.join("\n")));
    if (s.seed) d.appendChild(el("div", {}, "seed " + s.seed));
    if (s.gate) d.appendChild(el("div", {"class": s.gate === "rejected" ? "lin-gate missing" : "lin-gate"}, "gate: " + s.gate + (s.reason ? " (" + s.reason + ")" : "")));
    if (s.scores) d.appendChild(el("div", {}, "scores: " + kv(s.scores)));
    if (s.weight !== undefined) d.appendChild(el("div", {}, "in the merged set, sampling weight " + fmt(s.weight)));
    if (!s.parents.length && s.source) d.appendChild(el("div", {}, "source: " + s.source));
    d.appendChild(el("div", {}, "content hash " + s.hash + "…"));
    box.appendChild(d);
    return box;
  }
  function node(id, depth) {
    var li = el("li", {"class": "lin-node", "data-id": id});
    var s = S[id];
    if (!s) {
      li.setAttribute("data-missing", "1");
      li.appendChild(el("div", {"class": "missing"}, id + ": not in this page's index (augdag lineage " + id + " shows it)"));
      return li;
    }
    li.appendChild(card(id, s));
    if (s.parents.length && depth < 32) {
      var ul = el("ul");
      s.parents.forEach(function (p) { ul.appendChild(node(p, depth + 1)); });
      li.appendChild(ul);
    }
    return li;
  }
  function show(id) {
    out.textContent = "";
    if (!S[id]) {
      out.setAttribute("data-state", "not-found");
      out.appendChild(el("p", {"class": "missing", id: "lineage-notfound"}, "sample " + id + " not found"));
      out.appendChild(el("p", {}, "This page indexes " + Object.keys(S).length + " samples; augdag lineage '" + id + "' searches every stage output."));
      return;
    }
    out.setAttribute("data-state", "shown");
    out.appendChild(el("p", {}, "The sample, then its parents back to the raw image:"));
    var ul = el("ul");
    ul.appendChild(node(id, 0));
    out.appendChild(ul);
  }
  function fromHash() {
    var h = window.location.hash;
    if (h.indexOf("#sample=") !== 0) return;
    var id = h.slice(8);
    try { id = decodeURIComponent(id); } catch (e) { /* keep it as typed */ }
    q.value = id;
    show(id);
  }
  function go() {
    var id = q.value.trim();
    if (!id) return;
    var frag = "#sample=" + encodeURIComponent(id);
    if (window.location.hash === frag) show(id); else window.location.hash = frag;
  }
  q.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); go(); } });
  document.getElementById("lineage-go").addEventListener("click", go);
  window.addEventListener("hashchange", fromHash);
  fromHash();
  document.body.setAttribute("data-lineage", "ready");
})();
