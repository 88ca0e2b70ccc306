// What memtrace's pages share (the HTML report and the agent's page): DOM
// and number helpers, uPlot line charts that are made again when the
// reader's light or dark preference changes, and sparklines. Loaded before
// the page's own script, as the global `memtraceUi`.
"use strict";

const memtraceUi = (function () {
  /** An element with attributes (on* as listeners) and children. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim();
  }

  const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  /** Sizes as the text report writes them: exact below 1 KiB, else one decimal. */
  function bytes(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "—";
    const sign = n < 0 ? "-" : "";
    let v = Math.abs(n);
    if (v < 1024) return sign + Math.round(v) + " B";
    v /= 1024;
    let unit = 0;
    while (v >= 1024 && unit < UNITS.length - 1) {
      v /= 1024;
      unit++;
    }
    return sign + v.toFixed(1) + " " + UNITS[unit];
  }
  function signedBytes(n) {
    return (n > 0 ? "+" : "") + bytes(n);
  }
  function perHour(bytesPerSec) {
    return signedBytes(bytesPerSec * 3600) + "/h";
  }
  function secs(s) {
    if (s === null || s === undefined) return "—";
    if (s < 60) return (s < 10 ? s.toFixed(1) : s.toFixed(0)) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return (s / 3600).toFixed(1) + " h";
  }
  /** A bucket's bound: 10 s, 1 min, 10 min, 1 h. */
  function span(s) {
    const trim = (v) => String(Number(v.toFixed(1)));
    if (s < 60) return trim(s) + " s";
    if (s < 3600) return trim(s / 60) + " min";
    return trim(s / 3600) + " h";
  }
  function count(n) {
    return Number(n).toLocaleString("en-US");
  }
  function badge(verdict, text) {
    return el("span", { class: "badge " + (verdict || "none") }, text || verdict || "—");
  }
  function median(values) {
    if (!values.length) return 0;
    const sorted = values.slice().sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  // ---- charts (uPlot) ------------------------------------------------

  /** Steps of a byte axis: 1, 2, 4 ... 512 of each unit. */
  const BYTE_STEPS = [];
  for (let unit = 1; unit <= 2 ** 50; unit *= 1024) {
    for (let m = 1; m < 1024; m *= 2) BYTE_STEPS.push(m * unit);
  }

  /**
   * A line chart of byte values over seconds in `box`. `lines`: {label,
   * values, color, dash}; `draw(u)` draws extra marks on the canvas.
   */
  function lineChart(box, title, xs, lines, draw) {
    const fg = color("fg");
    const grid = color("line");
    const axis = {
      stroke: fg,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 },
    };
    const opts = {
      title,
      width: Math.max(320, box.clientWidth || 800),
      height: 240,
      scales: { x: { time: false } },
      axes: [
        Object.assign({}, axis, { values: (u, vals) => vals.map((v) => secs(v)) }),
        Object.assign({}, axis, { size: 78, incrs: BYTE_STEPS, values: (u, vals) => vals.map(bytes) }),
      ],
      series: [{ label: "time", value: (u, v) => (v === null ? "" : secs(v)) }].concat(
        lines.map((line) => ({
          label: line.label,
          stroke: line.color,
          width: 2,
          dash: line.dash,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? "—" : bytes(v)),
        }))
      ),
      hooks: draw ? { draw: [draw] } : {},
    };
    return new uPlot(opts, [xs].concat(lines.map((l) => l.values)), box);
  }

  // Charts take their colours when made: they are made again when the
  // reader's light or dark preference changes, and follow their box's width.
  const mounted = [];
  function mount(box, build) {
    requestAnimationFrame(() => {
      forget((entry) => !entry.box.isConnected);
      const entry = { box, build, chart: build() };
      entry.observer = new ResizeObserver(() => {
        const width = Math.max(320, box.clientWidth);
        if (Math.abs(width - entry.chart.width) > 4) {
          entry.chart.setSize({ width, height: entry.chart.height });
        }
      });
      entry.observer.observe(box);
      mounted.push(entry);
    });
  }
  /** Drops the charts `gone` picks (those of a stack no longer shown). */
  function forget(gone) {
    for (let i = mounted.length - 1; i >= 0; i--) {
      if (!gone(mounted[i])) continue;
      mounted[i].observer.disconnect();
      mounted[i].chart.destroy();
      mounted.splice(i, 1);
    }
  }
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", (e) => {
    forget((entry) => !entry.box.isConnected);
    for (const entry of mounted) {
      entry.chart.destroy();
      entry.chart = entry.build();
    }
    document.body.dataset.scheme = e.matches ? "dark" : "light";
  });

  /**
   * A sparkline of byte columns over the times `t`, as an inline SVG: one
   * polyline per column (classes l0, l1 ...), on one scale.
   */
  function sparkline(t, ...columns) {
    const width = 90;
    const height = 22;
    const svg = svgEl("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" });
    if (t.length < 2) return svg;
    const range = t[t.length - 1] - t[0] || 1;
    const max = Math.max(...columns.map((ys) => Math.max(...ys))) || 1;
    columns.forEach((ys, line) => {
      const points = t
        .map((x, i) => `${(((x - t[0]) / range) * (width - 2) + 1).toFixed(1)},${(height - 1 - (ys[i] / max) * (height - 3)).toFixed(1)}`)
        .join(" ");
      svg.append(svgEl("polyline", { class: "l" + line, points }));
    });
    return svg;
  }

  return { el, svgEl, color, bytes, signedBytes, perHour, secs, span, count, badge, median, BYTE_STEPS, lineChart, mount, forget, sparkline };
})();
