// PathRay viewer, first part: ask the server for the slide's descriptor and for the overlays
// of the opening view *before* the viewer's scripts are parsed, so the server works while the
// browser does. viewer.js takes these answers when they fit the view it opens on.
//
// It also holds what both parts must compute alike: the window asked for around a view (with
// a margin) and the overlay query string.
(function () {
  "use strict";
  const cfg = window.PATHRAY;
  const base = cfg.base || "";
  const MARGIN = 0.15; // fetch a margin around the view so small pans need no request

  // The query for a layer's objects in a view (x, y, width, height in level-0 pixels) seen at
  // ``down`` level-0 pixels per screen pixel.
  function overlayQuery(bounds, down) {
    const m = MARGIN;
    const box = [
      bounds.x - bounds.width * m, bounds.y - bounds.height * m,
      bounds.x + bounds.width * (1 + m), bounds.y + bounds.height * (1 + m),
    ].map((v) => Math.round(v));
    return {
      box,
      down,
      q: `x0=${box[0]}&y0=${box[1]}&x1=${box[2]}&y1=${box[3]}&downsample=${down.toFixed(4)}&format=packed`,
    };
  }
  function overlayUrl(layerId, q) {
    return `${base}/api/slides/${cfg.slideId}/overlay/${encodeURIComponent(layerId)}?${q}`;
  }
  window.pathrayOverlay = { overlayQuery, overlayUrl };

  const get = (path) => fetch(path, { credentials: "same-origin" }).then((r) => (r.ok ? r : Promise.reject(new Error(r.statusText))));
  const pre = (window.PATHRAY_PREFETCH = {
    dzi: get(`${base}/api/slides/${cfg.slideId}.dzi`).then((r) => r.text()),
    overlays: new Map(), // layer id -> {box, down, data: Promise}
  });
  pre.dzi.catch(() => {}); // viewer.js falls back to its own request

  // The view OpenSeadragon opens on: ?view= or the whole slide, fitted into the element and
  // centred (as fitBounds and the home view do).
  const el = document.getElementById("osd");
  const w = el.clientWidth, h = el.clientHeight;
  if (!cfg.layers || !cfg.width || !w || !h) return;
  const [x0, y0, x1, y1] = cfg.view || [0, 0, cfg.width, cfg.height];
  const down = Math.max((x1 - x0) / w, (y1 - y0) / h);
  const bw = w * down, bh = h * down;
  const bounds = { x: (x0 + x1 - bw) / 2, y: (y0 + y1 - bh) / 2, width: bw, height: bh };
  for (const layer of cfg.layers) {
    if (!layer.visible && layer.id !== cfg.edit) continue;
    const ask = overlayQuery(bounds, down);
    const data = get(overlayUrl(layer.id, ask.q)).then((r) => r.json());
    data.catch(() => {}); // an error is viewer.js's to report, when it asks again
    pre.overlays.set(layer.id, Object.assign(ask, { data }));
  }
})();
