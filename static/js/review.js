// Review screen: cursor, selection, class keys, undo, Grad-CAM toggle. No build step.
// Relabels go to POST /cases/{id}/relabel; the answer swaps the changed tiles and the
// differential out of band, then regroup() moves each tile into its class's group.
(() => {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const caseId = root.dataset.case;
  const gallery = document.getElementById("gallery");
  const undoButton = document.getElementById("undo");
  const sidebar = document.querySelector(".sidebar");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const keyToLabel = {};
  document.querySelectorAll(".keys [data-key]").forEach((b) => { keyToLabel[b.dataset.key] = b.dataset.label; });
  let current = null;            // id of the cell under the cursor
  let anchor = null;             // where a shift-click range starts
  const selected = new Set();    // ids
  const undoStack = [];          // [[id, previous label], ...] per change
  let camOn = false;
  let detailTimer = null;

  const tiles = () => Array.from(gallery.querySelectorAll(".tile"));
  const tileOf = (id) => document.getElementById("cell-" + id);

  function paint() {
    tiles().forEach((t) => {
      t.classList.toggle("current", t.dataset.id === current);
      t.classList.toggle("selected", selected.has(t.dataset.id));
    });
    const n = selected.size;
    document.getElementById("selection-count").textContent = n > 1 ? n + " selected" : "";
    undoButton.disabled = undoStack.length === 0 || root.dataset.locked === "true";
  }

  function showDetail(id) {
    clearTimeout(detailTimer);  // holding an arrow key loads only where it stops
    detailTimer = setTimeout(() => {
      htmx.ajax("GET", "/cells/" + id + "/detail", { source: sidebar, target: "#detail", swap: "outerHTML" });
    }, 90);
  }

  function moveTo(tile, { extend = false, toggle = false } = {}) {
    if (!tile) return;
    const id = tile.dataset.id;
    if (toggle) {
      selected.has(id) ? selected.delete(id) : selected.add(id);
      anchor = id;
    } else if (extend && anchor) {
      const all = tiles();
      const [a, b] = [all.indexOf(tileOf(anchor)), all.indexOf(tile)].sort((x, y) => x - y);
      selected.clear();
      all.slice(a, b + 1).forEach((t) => selected.add(t.dataset.id));
    } else {
      selected.clear();
      selected.add(id);
      anchor = id;
    }
    current = id;
    tile.scrollIntoView({ block: "nearest" });
    paint();
    showDetail(id);
  }

  // The tile in the next/previous visual row closest in x (rows wrap, groups stack).
  function vertical(tile, down) {
    const all = tiles();
    const r = tile.getBoundingClientRect();
    const x = r.left + r.width / 2;
    const ordered = down ? all.slice(all.indexOf(tile) + 1) : all.slice(0, all.indexOf(tile)).reverse();
    let rowTop = null;
    let best = null;
    for (const t of ordered) {
      const tr = t.getBoundingClientRect();
      if (Math.abs(tr.top - r.top) < 4) continue;
      if (rowTop === null) rowTop = tr.top;
      if (Math.abs(tr.top - rowTop) >= 4) break;
      const d = Math.abs(tr.left + tr.width / 2 - x);
      if (!best || d < best.d) best = { t, d };
    }
    return best && best.t;
  }

  function chosen() {
    if (selected.size) return Array.from(selected);
    return current ? [current] : [];
  }

  // Relabels run one after another (htmx would drop or reorder requests from one element), each
  // reading versions and labels when its turn comes, so fast typing and undo stay consistent.
  let queue = Promise.resolve();
  const enqueue = (job) => { queue = queue.then(job).catch((err) => console.error(err)); };

  function post(items) {
    const target = document.getElementById("differential").dataset.target;
    return htmx.ajax("POST", "/cases/" + caseId + "/relabel", {
      source: root, target: "#messages", swap: "innerHTML",
      values: { items: items.map(([id, label]) => id + ":" + tileOf(id).dataset.version + ":" + label).join(","), target },
      headers: { "X-CSRF-Token": csrf },
    }).then(regroup);
  }

  function relabel(label) {
    const ids = chosen();
    if (!ids.length) return;
    if (ids.length === 1) {  // move on at once, as the next key press is for the next cell
      const all = tiles();
      moveTo(all[all.indexOf(tileOf(ids[0])) + 1] || tileOf(ids[0]));
    }
    enqueue(async () => {
      const todo = ids.filter((id) => tileOf(id) && tileOf(id).dataset.label !== label);
      if (!todo.length) return;
      const before = todo.map((id) => [id, tileOf(id).dataset.label]);
      await post(todo.map((id) => [id, label]));
      const done = before.filter(([id]) => tileOf(id).dataset.label === label);
      if (done.length) undoStack.push(done);
      if (ids.includes(current)) showDetail(current);  // its label changed
      paint();
    });
  }

  function undo() {
    enqueue(async () => {
      const last = undoStack.pop();
      if (last) await post(last);
      paint();
    });
  }

  // Put every tile in its class's group, in sort order, and recount the groups.
  function regroup() {
    const ranks = window.__marrowRanks;
    tiles().forEach((t) => {
      if (!t.dataset.rank) t.dataset.rank = ranks[t.dataset.id];
      const group = document.getElementById("group-" + t.dataset.label);
      if (!group || t.closest(".group") === group) return;
      const box = group.querySelector(".tiles");
      const after = Array.from(box.children).find((o) => Number(o.dataset.rank) > Number(t.dataset.rank));
      box.insertBefore(t, after || null);
    });
    gallery.querySelectorAll(".group").forEach((g) => {
      const n = g.querySelectorAll(".tile").length;
      g.querySelector(".n").textContent = n;
      g.classList.toggle("empty", n === 0);
    });
    paint();
  }

  function remember() {  // ranks survive out-of-band swaps, which re-render tiles without them
    window.__marrowRanks = {};
    tiles().forEach((t) => { window.__marrowRanks[t.dataset.id] = t.dataset.rank; });
  }

  gallery.addEventListener("click", (e) => {
    const tile = e.target.closest(".tile");
    if (tile) moveTo(tile, { extend: e.shiftKey, toggle: e.ctrlKey || e.metaKey });
  });
  document.querySelectorAll(".keys [data-label]").forEach((b) => b.addEventListener("click", () => relabel(b.dataset.label)));
  undoButton.addEventListener("click", undo);

  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.altKey) return;
    const key = e.key.toLowerCase();
    const tile = current && tileOf(current);
    if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); undo(); return; }
    if (e.ctrlKey || e.metaKey) return;
    const all = tiles();
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const i = tile ? all.indexOf(tile) + (e.key === "ArrowRight" ? 1 : -1) : 0;
      moveTo(all[Math.max(0, Math.min(all.length - 1, i))], { extend: e.shiftKey });
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      moveTo(tile ? vertical(tile, e.key === "ArrowDown") : all[0], { extend: e.shiftKey });
    } else if (keyToLabel[key]) {
      relabel(keyToLabel[key]);
    } else if (key === "z") {
      undo();
    } else if (key === "g") {
      camOn = !camOn;
      applyCam();
    } else if (key === "a" && tile) {
      tile.closest(".group").querySelectorAll(".tile").forEach((t) => selected.add(t.dataset.id));
      paint();
    } else if (e.key === "Escape") {
      selected.clear();
      paint();
    } else {
      return;
    }
    e.preventDefault();
  });

  function applyCam() {
    const detail = document.getElementById("detail");
    detail.classList.toggle("cam-on", camOn);
    const box = document.getElementById("cam-toggle");
    if (box) box.checked = camOn;
  }
  document.body.addEventListener("change", (e) => {
    if (e.target.id === "cam-toggle") { camOn = e.target.checked; applyCam(); }
  });
  document.body.addEventListener("htmx:afterSettle", (e) => {
    if (e.detail.target && e.detail.target.id === "detail") applyCam();
    if (e.detail.target === gallery) {  // a new sort or filter: keys go to the cells again
      if (document.activeElement && document.activeElement.closest("#view-form")) document.activeElement.blur();
      start();
    }
  });

  function start() {  // keys work at once, as on the microscope's review screen
    remember();
    selected.clear();
    current = null;
    const first = gallery.querySelector(".tile");
    if (first) moveTo(first); else paint();
  }
  start();
})();
