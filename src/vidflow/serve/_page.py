"""The live page (one self-contained HTML file: no external scripts, fonts or styles)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vidflow live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#111;color:#ddd;display:flex;gap:12px;padding:12px}
 #left{flex:3} #right{flex:2;min-width:320px}
 #view{width:100%;background:#000;display:block;min-height:200px}
 button{background:#333;color:#ddd;border:1px solid #555;margin:2px;padding:3px 8px;cursor:pointer}
 button.on{background:#2a6;color:#fff}
 table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #333;padding:3px 6px;text-align:left}
 .running{color:#5d5}.blocked{color:#fa3}.stalled,.reconnecting{color:#f85}.failed{color:#f44}.ended,.removed{color:#888}
 #lat{color:#999}
</style></head><body>
<div id="left"><div id="pick"><button data-src="" class="on">all (tiled)</button></div>
<img id="view" alt="live view"><div id="lat">connecting...</div></div>
<div id="right"><table id="states"><thead><tr><th>source</th><th>state</th><th>fps</th><th>frames</th>
<th>dropped</th><th>errors</th><th>last error</th></tr></thead><tbody></tbody></table></div>
<script>
"use strict";
let ws = null, current = "", lastUrl = null, lats = [];
const img = document.getElementById("view"), lat = document.getElementById("lat");
function connect(src) {
  if (ws) { ws.onclose = null; ws.close(); }
  current = src;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(proto + "://" + location.host + "/view/ws" + (src ? "?source=" + encodeURIComponent(src) : ""));
  ws.binaryType = "blob";
  let head = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") { head = JSON.parse(ev.data); return; }
    const h = head, url = URL.createObjectURL(ev.data);
    img.onload = () => {
      if (lastUrl) URL.revokeObjectURL(lastUrl);
      lastUrl = url;
      const shown = Date.now() - h.ntp_ms;
      lats.push(shown); if (lats.length > 50) lats.shift();
      const s = [...lats].sort((a, b) => a - b);
      lat.textContent = "frame " + h.seq + ", latency " + shown.toFixed(0) + " ms (median " + s[s.length >> 1].toFixed(0) + " ms)";
      img.dataset.seq = h.seq;
      ws.send(JSON.stringify({ack: h.seq, shown_ms: shown}));
    };
    img.src = url;
  };
  ws.onclose = () => { lat.textContent = "disconnected; retrying"; setTimeout(() => connect(current), 1000); };
}
function esc(t) { return String(t).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
async function refresh() {
  try {
    const r = await fetch("/api/v1/sources", {credentials: "same-origin"});
    const data = await r.json();
    const rows = data.sources.map(s => "<tr data-id=\\"" + esc(s.id) + "\\"><td>" + esc(s.id) + "</td><td class=\\"" + esc(s.state) + "\\">" +
      esc(s.state) + "</td><td>" + s.fps.toFixed(1) + "</td><td>" + s.frames + "</td><td>" + s.dropped + "</td><td>" +
      s.errors + "</td><td>" + esc(s.last_error || "") + "</td></tr>");
    document.querySelector("#states tbody").innerHTML = rows.join("");
    const pick = document.getElementById("pick");
    const have = new Set([...pick.querySelectorAll("button")].map(b => b.dataset.src));
    for (const s of data.sources) {
      if (have.has(String(s.id))) continue;
      const b = document.createElement("button"); b.dataset.src = String(s.id); b.textContent = String(s.id);
      pick.appendChild(b);
    }
  } catch (e) { /* server restarting: try again */ }
}
document.getElementById("pick").addEventListener("click", (e) => {
  if (e.target.tagName !== "BUTTON") return;
  document.querySelectorAll("#pick button").forEach(b => b.classList.toggle("on", b === e.target));
  connect(e.target.dataset.src);
});
connect(""); refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
