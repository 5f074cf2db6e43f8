// PathRay slide viewer: OpenSeadragon over DeepZoom tiles, canvas overlay layers, Annotorious
// drawing on the editable annotation set, correction actions, and browser-side timings.
//
// The page (ui/server.py: /viewer) sets window.PATHRAY = {slideId, user, role, edit, view,
// width, height, layers}; prefetch.js has already asked for the descriptor and the overlays of
// the opening view (window.PATHRAY_PREFETCH). Every request goes to the same origin, so the
// PathRay session cookie protects it.
/* global OpenSeadragon, AnnotoriousOSD */
(function () {
  "use strict";
  const cfg = window.PATHRAY;
  // the mount prefix (empty at the root, "/ui" inside the Serve application)
  const base = cfg.base || "";
  const { overlayQuery, overlayUrl } = window.pathrayOverlay;
  const prefetched = window.PATHRAY_PREFETCH || { overlays: new Map() };
  // Timings read by benchmarks/viewer.py and the end-to-end tests.
  const metrics = (window.pathrayMetrics = {
    firstOverlayPaintMs: null, firstOverlayObjects: 0, overlayFetches: 0, prefetchedOverlays: 0,
    lastDrawMs: null,
  });
  const $ = (id) => document.getElementById(id);
  const layers = new Map(); // layer id -> {meta, on, data, pending}
  window.pathrayLayers = layers;
  let editable = null; // the layer meta of the annotation set being edited
  let tool = "pan";
  let lastSignature = null;

  async function api(path, opts) {
    const res = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
    if (!res.ok) {
      let msg = res.statusText;
      try { msg = (await res.json()).detail || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.headers.get("content-type")?.includes("json") ? res.json() : res.text();
  }
  function status(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  const dziUrl = `${base}/api/slides/${cfg.slideId}.dzi`;
  const viewer = OpenSeadragon({
    id: "osd",
    showNavigationControl: false,
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    crossOriginPolicy: false,
    maxZoomPixelRatio: 4,
    imageLoaderLimit: 6,
    // The 2D canvas drawer: without a GPU (virtual desktops, headless browsers) WebGL runs in
    // software (SwiftShader), where OpenSeadragon's WebGL drawer takes seconds per frame and its
    // support check alone about 0.3 s; the canvas drawer draws the same tiles in milliseconds.
    drawer: "canvas",
  });
  window.pathrayViewer = viewer;
  // The descriptor prefetch.js asked for, as OpenSeadragon's inline form (or its own request).
  (prefetched.dzi || Promise.reject(new Error("no prefetch")))
    .then((xml) => viewer.open(inlineDzi(xml)))
    .catch(() => viewer.open(dziUrl));
  function inlineDzi(xml) {
    const img = new DOMParser().parseFromString(xml, "application/xml").querySelector("Image");
    const size = img.querySelector("Size");
    return {
      Image: {
        xmlns: img.getAttribute("xmlns"),
        Url: `${base}/api/slides/${cfg.slideId}_files/`,
        Format: img.getAttribute("Format"),
        Overlap: img.getAttribute("Overlap"),
        TileSize: img.getAttribute("TileSize"),
        Size: { Width: size.getAttribute("Width"), Height: size.getAttribute("Height") },
      },
    };
  }

  // -- overlay canvas ---------------------------------------------------------------------
  const canvas = document.createElement("canvas");
  canvas.className = "pr-overlay";
  viewer.canvas.appendChild(canvas);
  const ctx = canvas.getContext("2d");

  function transform() {
    // level-0 pixel -> element pixel is an affine map (no rotation): compute it once per draw.
    const vp = viewer.viewport;
    const a = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const b = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 1000));
    return { ox: a.x, oy: a.y, s: (b.x - a.x) / 1000 };
  }

  function draw() {
    const start = performance.now();
    const w = viewer.canvas.clientWidth, h = viewer.canvas.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      canvas.style.width = w + "px";
      canvas.style.height = h + "px";
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!viewer.world.getItemCount()) return;
    const t = transform();
    let drawn = 0;
    for (const layer of layers.values()) {
      if (!layer.on || !layer.data) continue;
      drawn += drawLayer(layer, t);
    }
    metrics.lastDrawMs = performance.now() - start;
    if (drawn > 0) markPainted(drawn);
  }

  // The first overlay on screen, vector or raster (benchmarks and tests wait for it).
  function markPainted(objects) {
    if (metrics.firstOverlayPaintMs !== null) return;
    metrics.firstOverlayPaintMs = performance.now(); // since navigation start
    metrics.firstOverlayObjects = objects;
    document.body.dataset.overlayPainted = "1";
    setTimeout(annotator, 0); // drawing next, once the overlay is on screen
  }

  function drawLayer(layer, t) {
    // Objects come packed (pathray.results.packed, decoded by decodePacked): points and
    // polygons in level-0 pixels, stroked a chunk of shapes per canvas call.
    const st = layer.meta.style, d = layer.data;
    if (layer.raster) return 0; // drawn by OpenSeadragon as a tiled image
    ctx.strokeStyle = st.color;
    ctx.fillStyle = st.color;
    ctx.lineWidth = st.width;
    ctx.setLineDash(st.dash ? [6, 4] : []);
    const r = Math.max(2, st.width + 1);
    // Paths of a few hundred shapes each: Chromium's rasteriser slows down sharply with the
    // size of one path (13k nuclei: about 1 s as one path, under 0.1 s in chunks of 256).
    const CHUNK = 256;
    const { parts, rings, sizes, xy, points } = d;
    let dots = new Path2D(), lines = new Path2D(), nDots = 0, nLines = 0;
    let pi = 0, ri = 0, vi = 0, pt = 0;
    for (let i = 0; i < d.n; i++) {
      const skip = d.rejected(i);
      const np = parts[i];
      if (np === 0) {
        if (!skip) {
          const x = t.ox + points[pt] * t.s, y = t.oy + points[pt + 1] * t.s;
          dots.moveTo(x + r, y);
          dots.arc(x, y, r, 0, 2 * Math.PI);
          if (++nDots === CHUNK) { ctx.fill(dots); dots = new Path2D(); nDots = 0; }
        }
        pt += 2;
        continue;
      }
      for (let p = 0; p < np; p++) {
        const nr = rings[pi++];
        for (let k = 0; k < nr; k++) {
          const end = vi + 2 * sizes[ri++];
          if (!skip) {
            lines.moveTo(t.ox + xy[vi] * t.s, t.oy + xy[vi + 1] * t.s);
            for (let v = vi + 2; v < end; v += 2) lines.lineTo(t.ox + xy[v] * t.s, t.oy + xy[v + 1] * t.s);
            lines.closePath();
          }
          vi = end;
        }
      }
      if (!skip && ++nLines === CHUNK) { ctx.stroke(lines); lines = new Path2D(); nLines = 0; }
    }
    ctx.stroke(lines);
    ctx.fill(dots);
    return d.n;
  }

  // The packed answer of the overlay route as flat typed arrays (absolute coordinates), plus
  // `features`: the same objects as GeoJSON features, built on first use (clicks, tests).
  function decodePacked(pk) {
    const g = pk.geometry, q = g.quantum, src = g.xy;
    const xy = new Float64Array(src.length);
    let k = 0;
    for (const size of g.sizes) {
      let x = 0, y = 0;
      for (let v = 0; v < size; v++, k += 2) {
        x += src[k]; y += src[k + 1];
        xy[k] = x * q; xy[k + 1] = y * q;
      }
    }
    const status = pk.provenance_columns.status;
    const rejectedCode = status ? status.values.indexOf("rejected") : -1;
    const d = {
      mode: pk.mode, total: pk.total, truncated: pk.truncated, returned: pk.returned,
      n: pk.ids.length, ids: pk.ids, parts: g.parts, rings: g.rings, sizes: g.sizes, xy, points: g.points,
      rejected: rejectedCode < 0 ? () => false : (i) => status.index[i] === rejectedCode,
    };
    let features = null;
    Object.defineProperty(d, "features", {
      get: () => features || (features = toFeatures(pk, d)),
    });
    return d;
  }
  function toFeatures(pk, d) {
    const labels = pk.labels, cols = Object.entries(pk.provenance_columns);
    const out = new Array(d.n);
    let pi = 0, ri = 0, vi = 0, pt = 0;
    for (let i = 0; i < d.n; i++) {
      let geometry;
      if (d.parts[i] === 0) {
        geometry = { type: "Point", coordinates: [d.points[pt], d.points[pt + 1]] };
        pt += 2;
      } else {
        const polys = [];
        for (let p = 0; p < d.parts[i]; p++) {
          const poly = [];
          for (let k = d.rings[pi++]; k > 0; k--) {
            const ring = [];
            const end = vi + 2 * d.sizes[ri++];
            for (; vi < end; vi += 2) ring.push([d.xy[vi], d.xy[vi + 1]]);
            ring.push(ring[0]); // GeoJSON rings are closed
            poly.push(ring);
          }
          polys.push(poly);
        }
        geometry = polys.length === 1 ? { type: "Polygon", coordinates: polys[0] } : { type: "MultiPolygon", coordinates: polys };
      }
      const provenance = Object.assign({}, pk.provenance);
      for (const [name, col] of cols) {
        const v = col.values[col.index[i]];
        if (v !== null || name !== "status") provenance[name] = v;
      }
      const li = labels.index[i];
      out[i] = {
        type: "Feature", id: d.ids[i], geometry,
        properties: { label: labels.values[li], score: pk.scores ? pk.scores[i] : null, color: labels.colors[li], provenance },
      };
    }
    return out;
  }

  function viewBounds() {
    return viewer.viewport.viewportToImageRectangle(viewer.viewport.getBounds(true));
  }

  // The overlay prefetch.js asked for, if it covers this view at about this zoom (once).
  function takePrefetched(layer, bounds, down) {
    const pre = prefetched.overlays.get(layer.meta.id);
    if (!pre) return null;
    prefetched.overlays.delete(layer.meta.id);
    const [x0, y0, x1, y1] = pre.box, eps = 1;
    const covers = bounds.x >= x0 - eps && bounds.y >= y0 - eps
      && bounds.x + bounds.width <= x1 + eps && bounds.y + bounds.height <= y1 + eps;
    const ratio = down / pre.down;
    return covers && ratio > 0.8 && ratio < 1.25 ? pre : null;
  }

  async function fetchLayer(layer, force) {
    if (!layer.on) return;
    const bounds = viewBounds();
    const down = 1 / transform().s; // level-0 pixels per screen pixel
    const pre = force ? null : takePrefetched(layer, bounds, down);
    if (pre) metrics.prefetchedOverlays++;
    const { q } = pre || overlayQuery(bounds, down);
    // The slide opening and the layer list arriving both ask for the view: one request serves;
    // and a view already shown (a resize, a pan back) needs none.
    if ((q === layer.inflight || (q === layer.shown && layer.data)) && !force) return;
    layer.inflight = q;
    const token = (layer.pending = (layer.pending || 0) + 1);
    metrics.overlayFetches++;
    let data;
    try {
      data = decodePacked(await (pre ? pre.data : api(overlayUrl(layer.meta.id, q))));
    } finally {
      if (token === layer.pending) layer.inflight = null;
    }
    if (token !== layer.pending) return; // a newer request superseded this one
    layer.data = data;
    layer.shown = q;
    // Too many objects in a coarse view: the server renders them into tiles instead; a class
    // map (tile cores filled per class) is always drawn that way.
    setRaster(layer, Boolean(layer.meta.style.fill) || (data.mode === "centroids" && data.truncated));
    draw();
  }
  function setRaster(layer, on) {
    layer.raster = on;
    if (on && !layer.tiled) {
      layer.tiled = "loading";
      const src = viewer.world.getItemAt(0).source;
      const url = `${base}/api/slides/${cfg.slideId}/overlay_tiles/${encodeURIComponent(layer.meta.id)}`;
      viewer.addTiledImage({
        tileSource: {
          width: src.width, height: src.height, tileSize: src.tileSize, tileOverlap: src.tileOverlap,
          minLevel: src.minLevel, maxLevel: src.maxLevel,
          getTileUrl: (level, x, y) => `${url}/${level}/${x}_${y}.png`,
        },
        opacity: 1,
        success: (ev) => {
          layer.tiled = ev.item;
          ev.item.setOpacity(layer.raster && layer.on ? 1 : 0);
          // A raster layer has painted once its tiles for the view are all drawn.
          ev.item.addHandler("fully-loaded-change", (e) => {
            if (e.fullyLoaded && layer.raster && layer.on) markPainted(layer.data.total || layer.data.n);
          });
        },
      });
    }
    if (layer.tiled && layer.tiled !== "loading") layer.tiled.setOpacity(on && layer.on ? 1 : 0);
  }

  function refresh() {
    for (const layer of layers.values()) fetchLayer(layer).catch((e) => status(e.message, true));
  }

  viewer.addHandler("update-viewport", draw);
  viewer.addHandler("animation-finish", refresh);
  viewer.addHandler("resize", draw);

  // -- legend and layer toggles -------------------------------------------------------------
  function legend() {
    const box = $("legend");
    box.innerHTML = "";
    for (const layer of layers.values()) {
      const m = layer.meta;
      const row = document.createElement("label");
      row.className = "pr-layer";
      row.dataset.layer = m.id;
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = layer.on;
      cb.setAttribute("data-testid", `layer-${m.id}`);
      cb.addEventListener("change", () => {
        layer.on = cb.checked;
        if (layer.tiled && layer.tiled !== "loading") layer.tiled.setOpacity(layer.on && layer.raster ? 1 : 0);
        if (layer.on) fetchLayer(layer).catch((e) => status(e.message, true));
        draw();
      });
      const swatch = document.createElement("span");
      swatch.className = "pr-swatch";
      swatch.style.borderTop = `${m.style.width + 1}px ${m.style.dash ? "dashed" : "solid"} ${m.style.color}`;
      const text = document.createElement("span");
      text.innerHTML = `<b></b> <small></small>`;
      text.querySelector("b").textContent = m.name;
      text.querySelector("small").textContent = m.legend;
      // A class map lists its classes, each with the colour its tiles are filled in.
      for (const [name, colour] of Object.entries(m.style.classes || {})) {
        const item = document.createElement("span");
        item.className = "pr-class";
        item.dataset.testid = `class-${name}`;
        const chip = document.createElement("i");
        chip.style.background = colour;
        item.append(chip, document.createTextNode(name));
        text.append(item);
      }
      row.append(cb, swatch, text);
      box.appendChild(row);
    }
  }

  // -- object info on click ---------------------------------------------------------------------
  function inside(ring, x, y) {
    let hit = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }
  function pick(x, y, tol) {
    // The set being edited wins, then the top layer.
    const order = [...layers.values()].reverse();
    if (editable && layers.has(editable.id)) order.unshift(layers.get(editable.id));
    for (const layer of order) {
      if (!layer.on || !layer.data || layer.raster) continue;
      for (const f of layer.data.features) {
        const g = f.geometry;
        if (g.type === "Point") {
          if (Math.hypot(g.coordinates[0] - x, g.coordinates[1] - y) <= tol) return { layer, f };
        } else if (g.type === "Polygon" && inside(g.coordinates[0], x, y)) return { layer, f };
      }
    }
    return null;
  }
  function showInfo(layer, f) {
    const box = $("info");
    const p = f.properties;
    box.hidden = false;
    box.dataset.objectId = String(f.id);
    box.dataset.layer = layer.meta.id;
    $("info-layer").textContent = layer.meta.name;
    $("info-label").textContent = p.label ?? "(none)";
    $("info-score").textContent = p.score == null ? "-" : Number(p.score).toFixed(3);
    $("info-prov").textContent = Object.entries(p.provenance || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    const mine = editable && layer.meta.id === editable.id && !editable.readonly;
    $("edit-actions").hidden = !mine;
    $("correct-actions").hidden = !(mine && editable.kind === "correction");
  }
  function findFeature(layerId, id) {
    const layer = layers.get(layerId);
    const f = layer && layer.data ? layer.data.features.find((x) => String(x.id) === String(id)) : null;
    return f ? { layer, f } : null;
  }

  viewer.addHandler("canvas-click", (ev) => {
    if (!ev.quick) return;
    const p = viewer.viewport.viewerElementToImageCoordinates(ev.position);
    if (tool === "point" && editable) {
      ev.preventDefaultAction = true;
      saveNew({ type: "Point", coordinates: [p.x, p.y] });
      return;
    }
    if (tool !== "pan") return;
    const hit = pick(p.x, p.y, 6 / transform().s);
    if (hit) showInfo(hit.layer, hit.f);
    else $("info").hidden = true;
  });

  // -- drawing (Annotorious) on the editable set ------------------------------------------------
  // Annotorious is about 700 kB of script: parsing it before the first overlay would delay
  // that paint by most of a second, so it loads after it (or at once when editing).
  let anno = null;
  let annoLoading = null;
  function annotator() {
    if (!annoLoading) {
      annoLoading = new Promise((resolve, reject) => {
        const css = document.createElement("link");
        css.rel = "stylesheet";
        css.href = `${base}/vendor/annotorious-openseadragon.css`;
        document.head.appendChild(css);
        const el = document.createElement("script");
        el.src = `${base}/vendor/annotorious-openseadragon.js`;
        el.onload = resolve;
        el.onerror = () => reject(new Error("cannot load the drawing tools (Annotorious)"));
        document.head.appendChild(el);
      }).then(() => {
        anno = AnnotoriousOSD.createOSDAnnotator(viewer, { drawingEnabled: false, drawingMode: "drag", autoSave: true });
        window.pathrayAnno = anno;
        wireAnnotator();
        syncAnnotator();
        return anno;
      });
      annoLoading.catch((e) => status(e.message, true));
    }
    return annoLoading;
  }
  // The annotator shows the editable set, in its layer's colour.
  function syncAnnotator() {
    if (!anno) return;
    anno.clearAnnotations();
    if (!editable) return;
    anno.setStyle({ stroke: editable.style.color, strokeWidth: 2, fill: editable.style.color, fillOpacity: 0.12 });
    loadShapes().catch((e) => status(e.message, true));
  }

  function toGeometry(selector) {
    const g = selector.geometry;
    if (selector.type === "RECTANGLE") {
      return { type: "Polygon", coordinates: [[[g.x, g.y], [g.x + g.w, g.y], [g.x + g.w, g.y + g.h], [g.x, g.y + g.h], [g.x, g.y]]] };
    }
    const pts = g.points.map((p) => [p[0], p[1]]);
    pts.push(pts[0]);
    return { type: "Polygon", coordinates: [pts] };
  }
  function toAnnotorious(f) {
    const ring = f.geometry.coordinates[0];
    const points = ring.slice(0, -1).map((p) => [p[0], p[1]]); // Annotorious rings are open
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const bounds = { minX: Math.min(...xs), minY: Math.min(...ys), maxX: Math.max(...xs), maxY: Math.max(...ys) };
    return {
      id: String(f.id),
      bodies: [],
      target: { annotation: String(f.id), selector: { type: "POLYGON", geometry: { points, bounds } } },
    };
  }
  const isShape = (f) => f.geometry.type === "Polygon";
  async function saveNew(geometry, tempId) {
    const label = $("label").value || null;
    try {
      const saved = await api(`${base}/api/annotations`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ annotation_set: editable.set, slide_id: cfg.slideId, geometry, label }),
      });
      if (tempId) anno.removeAnnotation(tempId);
      if (anno && isShape(saved)) anno.addAnnotation(toAnnotorious(saved));
      status(`saved annotation ${saved.id} (${label || "no label"})`);
      document.body.dataset.lastSaved = String(saved.id);
      await loadEditable(false);
      await summary();
    } catch (e) {
      if (tempId) anno.removeAnnotation(tempId);
      status(e.message, true);
    }
  }
  // What Annotorious reports: a shape drawn, redrawn or selected.
  function wireAnnotator() {
    anno.on("createAnnotation", (a) => saveNew(toGeometry(a.target.selector), a.id));
    anno.on("updateAnnotation", async (a) => {
      try {
        await api(`${base}/api/annotations/${a.id}`, {
          method: "PATCH",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ geometry: toGeometry(a.target.selector), action: "redraw" }),
        });
        status(`updated annotation ${a.id}`);
        await loadEditable(false);
      } catch (e) { status(e.message, true); }
    });
    anno.on("selectionChanged", (sel) => {
      const hit = sel.length ? findFeature(editable.id, sel[0].id) : null;
      if (hit) showInfo(hit.layer, hit.f);
    });
  }

  async function loadEditable(reload) {
    // The editable set's objects live in Annotorious (to edit them) and, for points and the
    // click-info lookup, in its canvas layer.
    if (!editable) return;
    const layer = layers.get(editable.id);
    if (layer) await fetchLayer(layer, true); // after an edit: never a stale answer
    if (reload) await loadShapes();
  }
  async function loadShapes() {
    if (!editable || editable.readonly || !anno) return;
    const anns = await api(`${base}/api/slides/${cfg.slideId}/annotations?annotation_set=${encodeURIComponent(editable.set)}`);
    const shown = anns.features.filter((f) => isShape(f) && f.properties.status !== "rejected");
    anno.setAnnotations(shown.map(toAnnotorious));
  }

  function setTool(name) {
    tool = name;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === name);
    const drawing = name === "polygon" || name === "rectangle";
    if (!drawing && !anno) return; // nothing to switch off yet
    annotator().then((a) => {
      if (tool !== name) return; // another tool was chosen meanwhile
      if (drawing) {
        // Rectangles are dragged; polygons are clicked point by point (closed on the first).
        a.setDrawingMode(name === "rectangle" ? "drag" : "click");
        a.setDrawingTool(name);
      }
      a.setDrawingEnabled(drawing);
    }).catch(() => {});
  }
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));

  $("delete").addEventListener("click", async () => {
    const id = $("info").dataset.objectId;
    if (!id || !editable) return;
    try {
      await api(`${base}/api/annotations/${id}`, { method: "DELETE" });
      if (anno) anno.removeAnnotation(id);
      $("info").hidden = true;
      status(`deleted annotation ${id}`);
      await loadEditable(false);
    } catch (e) { status(e.message, true); }
  });

  // -- correction mode ------------------------------------------------------------------------
  async function correct(action) {
    const id = $("info").dataset.objectId;
    const body = { action };
    if (action === "relabel") body.label = $("label").value;
    try {
      await api(`${base}/api/annotations/${id}`, {
        method: action === "reject" ? "DELETE" : "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (action === "reject") { if (anno) anno.removeAnnotation(String(id)); $("info").hidden = true; }
      await loadEditable(false);
      // Refresh the object's info only if it is still the one shown: the user may have picked
      // another while the layer reloaded, and the next action must go to that one.
      const hit = findFeature(editable.id, id);
      if (hit && action !== "reject" && $("info").dataset.objectId === String(id)) showInfo(hit.layer, hit.f);
      await summary();
      status(`${action}: object ${id}`); // after the reload: the action is complete
    } catch (e) { status(e.message, true); }
  }
  for (const a of ["accept", "reject", "relabel"]) $(`c-${a}`).addEventListener("click", () => correct(a));

  async function summary() {
    if (!editable || editable.kind !== "correction") { $("correction").hidden = true; return; }
    const s = await api(`${base}/api/corrections/${encodeURIComponent(editable.set)}/summary?slide_id=${cfg.slideId}`);
    $("correction").hidden = false;
    $("summary").textContent = Object.entries(s).map(([k, v]) => `${k}: ${v}`).join("  ");
    for (const fmt of ["geojson", "asap"]) {
      $(`export-${fmt}`).href = `${base}/api/corrections/${encodeURIComponent(editable.set)}/export?fmt=${fmt}&slide_id=${cfg.slideId}`;
    }
  }

  // -- set-up -----------------------------------------------------------------------------------
  function chooseEditable(id) {
    editable = id ? layers.get(id).meta : null;
    const readonly = !editable || editable.readonly;
    for (const b of document.querySelectorAll("[data-tool]")) if (b.dataset.tool !== "pan") b.disabled = readonly;
    $("delete").disabled = readonly;
    $("readonly").hidden = !(editable && editable.readonly);
    const sel = $("label");
    sel.innerHTML = "";
    for (const l of editable ? editable.labels : []) sel.add(new Option(l, l));
    setTool("pan");
    if (editable) {
      layers.get(id).on = true;
      legend();
      if (anno) syncAnnotator();
      else annotator().catch(() => {}); // syncs once loaded
      const layer = layers.get(id);
      if (viewer.world.getItemCount()) fetchLayer(layer).catch((e) => status(e.message, true));
    } else syncAnnotator();
    summary().catch((e) => status(e.message, true));
  }

  async function loadLayers() {
    // The page came with the layer list (prefetch.js used it): ask the server only later on.
    const meta = lastSignature === null && cfg.layers ? cfg.layers : await api(`${base}/api/slides/${cfg.slideId}/layers`);
    const signature = JSON.stringify(meta);
    if (signature === lastSignature) return meta; // nothing new: keep the tool and selection
    const first = lastSignature === null;
    lastSignature = signature;
    const keep = new Map(layers);
    layers.clear();
    for (const m of meta) {
      const old = keep.get(m.id);
      layers.set(m.id, { meta: m, on: old ? old.on : m.visible, data: old ? old.data : null });
    }
    legend();
    const pick = $("editable");
    const current = editable ? editable.id : cfg.edit || "";
    pick.innerHTML = "";
    pick.add(new Option("(view only)", ""));
    for (const m of meta) if (m.editable_set) pick.add(new Option(`${m.name}${m.readonly ? " (protected, read-only)" : ""}`, m.id));
    if ([...pick.options].some((o) => o.value === current)) pick.value = current;
    if (first || (editable ? editable.id : "") !== pick.value) chooseEditable(pick.value);
    else if (editable) editable = layers.get(editable.id).meta;
    if (viewer.world.getItemCount()) refresh();
    return meta;
  }
  $("editable").addEventListener("change", (e) => chooseEditable(e.target.value));
  window.pathrayReloadLayers = loadLayers;

  viewer.addHandler("open", () => {
    // ?view=x0,y0,x1,y1 (level-0 pixels) opens on that region: links and benchmarks use it.
    if (cfg.view) {
      const [x0, y0, x1, y1] = cfg.view;
      const r = viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0);
      viewer.viewport.fitBounds(r, true);
    }
    status("slide open");
    refresh();
  });
  viewer.addHandler("open-failed", (e) => status(`cannot open slide: ${e.message}`, true));
  loadLayers().catch((e) => status(e.message, true));
  // New run or iteration results appear as layers without a reload.
  setInterval(() => { if (document.visibilityState === "visible") loadLayers().catch(() => {}); }, cfg.pollMs || 5000);
})();
