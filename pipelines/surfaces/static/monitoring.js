// The monitoring page's charts (Plotly, served by the plugin beside this file) and the nights table's sorting and
// filtering. The page holds its data as JSON in <script type="application/json" id="chart-data">: no data value is
// ever script, and every text from the data was HTML-escaped by the server before Plotly sees it.
(function () {
  "use strict";
  var holder = document.getElementById("chart-data");
  var data = holder ? JSON.parse(holder.textContent) : null;
  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  function vline(x, label, colour) {
    return {
      shape: { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: colour, dash: "dot", width: 1.5 } },
      note: { x: x, y: 1, xref: "x", yref: "paper", text: label, showarrow: false, yanchor: "bottom", font: { size: 11, color: colour } },
    };
  }

  // dates, never hours: with few nights plotly would tick every 12 hours
  function dateAxis() {
    var axis = { type: "date", tickformat: "%Y-%m-%d" };
    var n = data.nights.length;
    if (n > 1 && (Date.parse(data.nights[n - 1]) - Date.parse(data.nights[0])) / 86400000 < 20) axis.dtick = 86400000;
    return axis;
  }

  function events(layout) {
    var seen = {};
    (data.events || []).forEach(function (e) {
      var line = vline(e.ds, e.label, e.kind === "rollback" ? "#b00020" : "#2e7d32");
      seen[e.ds] = (seen[e.ds] || 0) + 1;
      line.note.yshift = -14 * (seen[e.ds] - 1);  // a promotion and a rollback on one night: one label under the other
      line.note.xanchor = "right";
      layout.shapes.push(line.shape);
      layout.annotations.push(line.note);
    });
  }

  function drift() {
    var el = document.getElementById("chart-drift");
    if (!el || !data.nights.length) return;
    var traces = [
      { x: data.nights, y: data.drift_share, name: "drift share", mode: "lines+markers", line: { color: "#c62828" },
        text: data.drift_text, hovertemplate: "%{x}: drift share %{y:.2f}<br>%{text}<extra></extra>" },
    ];
    if (data.quarantined.length) {
      traces.push({ x: data.quarantined, y: data.quarantined.map(function () { return 0; }), name: "quarantined",
        mode: "markers", marker: { symbol: "x", size: 12, color: "#000" }, text: data.quarantine_text,
        hovertemplate: "%{x}: quarantined<br>%{text}<extra></extra>" });
    }
    var layout = { title: { text: "Drift share per night", font: { size: 15 } }, height: 300, margin: { t: 40, r: 20, b: 40, l: 55 },
      yaxis: { range: [0, 1.05], title: "share of columns" }, xaxis: dateAxis(), hovermode: "closest",
      legend: { orientation: "h", y: -0.25 }, shapes: [], annotations: [] };
    if (data.drift_threshold !== null) {
      layout.shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: data.drift_threshold, y1: data.drift_threshold,
        line: { color: "#c62828", dash: "dash", width: 1 } });
      layout.annotations.push({ xref: "paper", x: 1, y: data.drift_threshold, text: "threshold " + data.drift_threshold,
        showarrow: false, xanchor: "right", yanchor: "bottom", font: { size: 11, color: "#c62828" } });
    }
    events(layout);
    Plotly.newPlot(el, traces, layout, CONFIG);
  }

  function metric() {
    var el = document.getElementById("chart-metric");
    if (!el || !data.nights.length) return;
    var m = data.metric;
    var traces = [
      { x: data.nights, y: data.band_high, mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false },
      { x: data.nights, y: data.band_low, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(25,118,210,0.15)",
        name: "estimate ± one night's chance variation", hoverinfo: "skip" },
      { x: data.nights, y: data.estimated, name: "estimated " + m, mode: "lines+markers", line: { color: "#1976d2" },
        hovertemplate: "%{x}: estimated %{y:.3f}<extra></extra>" },
      { x: data.nights, y: data.realised, name: "realised " + m + " (95% interval)", mode: "markers",
        marker: { symbol: "square", size: 8, color: "#ef6c00" },
        error_y: { type: "data", symmetric: false, array: data.realised_plus, arrayminus: data.realised_minus, color: "#ef6c00" },
        hovertemplate: "%{x}: realised %{y:.3f}<extra></extra>" },
      { x: data.nights, y: data.held_out, name: "champion's held-out " + m, mode: "lines", line: { color: "#2e7d32", shape: "hv" },
        hovertemplate: "%{x}: held-out %{y:.3f}<extra></extra>" },
      { x: data.nights, y: data.alarm, name: "alarm (allowed drop)", mode: "lines", line: { color: "#c62828", dash: "dash", shape: "hv" },
        hovertemplate: "%{x}: alarm at %{y:.3f}<extra></extra>" },
    ];
    if (data.pending.length) {
      traces.push({ x: data.pending, y: data.pending_y, name: "labels pending", mode: "markers",
        marker: { symbol: "circle-open", size: 11, color: "#757575" }, hovertemplate: "%{x}: labels pending<extra></extra>" });
    }
    var layout = { title: { text: m + ": estimated (no labels yet) and realised", font: { size: 15 } }, height: 340,
      margin: { t: 40, r: 20, b: 40, l: 55 }, xaxis: dateAxis(), yaxis: { title: m }, hovermode: "closest",
      legend: { orientation: "h", y: -0.2 }, shapes: [], annotations: [] };
    if (data.floor !== null) {
      layout.shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: data.floor, y1: data.floor, line: { color: "#6a1b9a", dash: "dot", width: 1 } });
      layout.annotations.push({ xref: "paper", x: 0, y: data.floor, text: data.floor_label, showarrow: false, xanchor: "left",
        yanchor: "bottom", font: { size: 11, color: "#6a1b9a" } });
    }
    events(layout);
    Plotly.newPlot(el, traces, layout, CONFIG);
  }

  function heatmap() {
    var el = document.getElementById("chart-heatmap");
    var h = data.heat;
    if (!el || !h || !h.columns.length) return;
    var layout = { title: { text: "Columns by night: statistic against its threshold (1 = at the threshold); click a cell for the night's drift report", font: { size: 14 } },
      height: Math.min(180 + 22 * h.columns.length, 940), margin: { t: 40, r: 20, b: 100, l: 180 },
      xaxis: { type: "category", tickangle: -45 }, yaxis: { autorange: "reversed", automargin: true } };
    Plotly.newPlot(el, [{
      type: "heatmap", x: h.nights, y: h.columns, z: h.z, text: h.text, zmin: 0, zmax: 2,
      colorscale: [[0, "#f7fbff"], [0.5, "#fdd49e"], [0.5001, "#fc8d59"], [1, "#b30000"]],
      colorbar: { title: { text: "× threshold" } }, hoverongaps: false,
      hovertemplate: "%{x} · %{y}<br>%{text}<extra></extra>",
    }], layout, CONFIG);
    el.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      var link = point && h.links[point.x];
      if (link) window.location.assign(link);
    });
  }

  function table() {
    var nights = document.getElementById("nights");
    if (!nights) return;
    var body = nights.tBodies[0];
    var filter = document.getElementById("night-filter");
    var status = document.getElementById("night-status");
    function apply() {
      var text = (filter && filter.value || "").toLowerCase();
      var wanted = status ? status.value : "";
      Array.prototype.forEach.call(body.rows, function (row) {
        var show = (!text || row.textContent.toLowerCase().indexOf(text) >= 0) &&
          (!wanted || row.getAttribute("data-status") === wanted || row.getAttribute("data-decision") === wanted);
        row.hidden = !show;
      });
    }
    if (filter) filter.addEventListener("input", apply);
    if (status) status.addEventListener("change", apply);
    Array.prototype.forEach.call(nights.tHead.rows[0].cells, function (th, index) {
      th.classList.add("sortable");
      th.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") !== "descending";
        Array.prototype.forEach.call(nights.tHead.rows[0].cells, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        var rows = Array.prototype.slice.call(body.rows);
        function key(row) {
          var cell = row.cells[index];
          var value = cell ? (cell.getAttribute("data-sort") || cell.textContent.trim()) : "";
          var number = Number(value);
          return value !== "" && !isNaN(number) ? number : value;
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  if (data && window.Plotly) {
    drift();
    metric();
    heatmap();
  }
  table();
})();
