// The rollout view: fetches /api/isvc/<ns>/<name> and draws each chart with uPlot. Refreshes
// itself (every data-refresh seconds while a canary is active, slower otherwise). The charts are
// kept in window.inferenceCharts by id, so a test can read the points each one draws.
(function () {
  "use strict";
  const body = document.body;
  const ns = body.dataset.namespace, name = body.dataset.name;
  const url = "/api/isvc/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name);
  const colors = {value: "#d62728", stable: "#1f77b4", bound: "#7f7f7f", planned: "#2ca02c",
                  effective: "#98df8a", measured: "#ff7f0e", replicas: "#1f77b4", "replicas-status": "#aec7e8",
                  desired: "#9467bd", signal: "#d62728", target: "#7f7f7f"};
  window.inferenceCharts = {};
  const shapes = {};

  function show(v, unit) {
    if (v == null) return "-";
    if (unit === "fraction") return (v * 100).toPrecision(3) + "%";
    if (unit === "seconds") {
      if (v === 0) return "0s";
      if (Math.abs(v) < 1e-3) return (v * 1e6).toPrecision(3) + "us";
      if (Math.abs(v) < 1) return (v * 1e3).toPrecision(3) + "ms";
      return v.toPrecision(3) + "s";
    }
    if (unit === "percent") return v.toPrecision(3) + "%";
    return +v.toPrecision(4) + "";
  }

  function options(chart, width) {
    const axes = [{}, {scale: "y", values: (u, vals) => vals.map(v => show(v, chart.unit)), size: 70}];
    const scales = {x: {time: true}, y: {auto: true}};
    if (chart.unit2) {
      scales.y2 = {auto: true};
      axes.push({scale: "y2", side: 1, grid: {show: false}, values: (u, vals) => vals.map(v => show(v, chart.unit2)),
                 size: 70});
    }
    const series = [{}].concat(chart.series.map(s => ({
      label: s.label, scale: s.axis, stroke: colors[s.role] || "#000", width: s.role === "value" ? 2 : 1.5,
      dash: (s.role === "bound" || s.role === "target") ? [6, 4] : undefined, spanGaps: false,
      value: (u, v) => show(v, s.axis === "y2" ? chart.unit2 : chart.unit),
      paths: (s.role === "planned" || s.role === "effective" || s.role === "desired" || s.role === "replicas-status")
        ? uPlot.paths.stepped({align: 1}) : undefined,
    })));
    return {title: chart.title, width: width, height: 260, scales: scales, axes: axes, series: series};
  }

  function draw(payload) {
    const holder = document.getElementById("charts");
    const width = Math.max(480, Math.min(1100, holder.clientWidth || 900));
    const seen = new Set();
    for (const chart of payload.charts) {
      seen.add(chart.id);
      const shape = JSON.stringify([chart.series, chart.unit, chart.unit2]);
      let u = window.inferenceCharts[chart.id];
      if (u && shapes[chart.id] !== shape) { u.destroy(); u = null; document.getElementById(chart.id).remove(); }
      if (!u) {
        const box = document.createElement("div");
        box.id = chart.id; box.className = "chart";
        holder.appendChild(box);
        u = new uPlot(options(chart, width), chart.data, box);
        window.inferenceCharts[chart.id] = u;
        shapes[chart.id] = shape;
      } else {
        u.setData(chart.data);
      }
    }
    for (const id of Object.keys(window.inferenceCharts)) {
      if (!seen.has(id)) { window.inferenceCharts[id].destroy(); delete window.inferenceCharts[id];
                           document.getElementById(id).remove(); }
    }
  }

  function schedule(seconds) { setTimeout(tick, seconds * 1000); }

  async function tick() {
    let wait = +body.dataset.refresh || 2;
    try {
      const response = await fetch(url, {cache: "no-store"});
      const payload = await response.json();
      if (!response.ok) throw new Error(payload.error || response.statusText);
      draw(payload);
      const c = payload.overview.canary;
      document.getElementById("phase").textContent = c ? (c.phase + (c.active && c.weight != null ? " at " + c.weight + "%" : "")) : "no canary";
      document.getElementById("tree").textContent = payload.tree;
      document.getElementById("errors").textContent = payload.errors.join("\n");
      document.getElementById("updated").textContent = "updated " + new Date(payload.now * 1000).toISOString();
      body.dataset.active = payload.active ? "true" : "false";
      body.dataset.updates = (+body.dataset.updates + 1) + "";
      wait = payload.refresh;
    } catch (err) {
      document.getElementById("errors").textContent = "" + err;
    }
    schedule(wait);
  }
  tick();
})();
