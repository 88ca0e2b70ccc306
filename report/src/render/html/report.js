// memtrace's HTML report: draws the report (or diff) embedded in the page
// as JSON (#memtrace-data). Charts are uPlot's; the stack table, the
// icicle graph and the sparklines are laid out here. Nothing is fetched.
// When drawn, <body> gets data-ready="1" and window.memtraceReady the
// milliseconds since the navigation started (the tests wait for both).
"use strict";

(function () {
  // Milliseconds since the navigation started, at each step of the drawing
  // (window.memtraceTimings, for the tests' messages).
  const timings = { script: performance.now() };
  const payload = JSON.parse(document.getElementById("memtrace-data").textContent);
  timings.parsed = performance.now();
  const app = document.getElementById("app");
  const ROWS_PER_PAGE = 200;
  const SEVERITY = { leak: 0, growing: 1, plateau: 2, stable: 3 };

  const { el, svgEl, color, bytes, signedBytes, perHour, secs, span, count, badge, median, BYTE_STEPS, lineChart, mount, forget, sparkline } = memtraceUi;

  // ---- frames ----------------------------------------------------------

  function basename(path) {
    return path ? path.slice(path.lastIndexOf("/") + 1) : "";
  }
  /** An address as the report writes it (a hex string; a number in old reports). */
  function hex(address) {
    return typeof address === "string" ? address : "0x" + Number(address).toString(16);
  }
  function frameName(f) {
    if (f.function) return f.function;
    if (f.module) return basename(f.module) + "+" + hex(f.address);
    return hex(f.address);
  }
  function frameWhere(f) {
    if (f.file) return basename(f.file) + (f.line ? ":" + f.line : "");
    return f.module ? basename(f.module) : "";
  }
  // ---- the age chart ---------------------------------------------------

  /** A bar chart of the live bytes by age. */
  function ageChart(box, buckets) {
    const fg = color("fg");
    const grid = color("line");
    const labels = buckets.map((b) =>
      b.max_secs === null || b.max_secs === undefined
        ? "≥ " + span(b.min_secs)
        : b.min_secs === 0
        ? "< " + span(b.max_secs)
        : span(b.min_secs) + "–" + span(b.max_secs)
    );
    const opts = {
      title: "Live bytes by age",
      width: Math.max(320, box.clientWidth || 600),
      height: 200,
      scales: { x: { time: false, range: [-0.5, buckets.length - 0.5] } },
      axes: [
        {
          stroke: fg,
          grid: { show: false },
          ticks: { stroke: grid },
          splits: () => buckets.map((_, i) => i),
          values: (u, vals) => vals.map((v) => labels[v] || ""),
        },
        { stroke: fg, grid: { stroke: grid }, ticks: { stroke: grid }, size: 78, incrs: BYTE_STEPS, values: (u, vals) => vals.map(bytes) },
      ],
      series: [
        { label: "age", value: (u, v) => (v === null ? "" : labels[v]) },
        {
          label: "live bytes",
          stroke: color("accent"),
          fill: color("accent") + "99",
          paths: uPlot.paths.bars({ size: [0.7, 60] }),
          points: { show: false },
          value: (u, v) => (v === null ? "—" : bytes(v)),
        },
      ],
      legend: { show: true },
    };
    return new uPlot(opts, [buckets.map((_, i) => i), buckets.map((b) => b.bytes)], box);
  }

  // ---- the report ------------------------------------------------------

  function renderReport(report, frameTable) {
    // Stacks with their frames resolved; OOM victims' stacks too.
    const resolve = (stack, i, source) =>
      Object.assign({}, stack, { id: source + i, frames: stack.frames.map((f) => frameTable[f]) });
    const stacks = report.stacks.map((s, i) => resolve(s, i, "s"));
    const comms = new Map(report.targets.map((t) => [t.pid, t.comm]));
    const detail = el("section", { class: "panel", id: "detail", hidden: true, "aria-live": "polite" });

    app.append(header(report, stacks));
    report.oom_kills.forEach((kill, k) =>
      app.append(oomBanner(kill, kill.top_stacks.map((s, i) => resolve(s, i, "oom" + k + "-")), openStack))
    );
    app.append(lossesPanel(report));
    for (const target of report.targets) app.append(targetPanel(target));
    const table = stackTable(stacks, comms, openStack);
    app.append(table.panel, detail, icicle(stacks, table));

    function openStack(stack) {
      table.select(stack.id);
      detail.replaceChildren(...stackDetail(stack, comms));
      detail.hidden = false;
      detail.scrollIntoView({ block: "nearest" });
      detail.querySelector("h2").focus({ preventScroll: true });
    }
  }

  function header(report, stacks) {
    const targets = report.targets.map((t) => `${t.comm} (${t.pid})${t.exited ? " [exited]" : ""}`);
    const verdicts = {};
    for (const s of stacks) verdicts[s.verdict] = (verdicts[s.verdict] || 0) + 1;
    const verdictLine = ["leak", "growing", "plateau", "stable"]
      .filter((v) => verdicts[v])
      .map((v) => `${verdicts[v]} ${v}`)
      .join(", ");
    const t = report.totals;
    const figure = (label, value) => el("div", {}, el("b", {}, value), el("span", { class: "muted" }, label));
    return el(
      "header",
      { class: "panel" },
      el("h1", {}, "memtrace: ", targets.length ? targets.join(", ") : "no target"),
      el(
        "div",
        { class: "muted" },
        `traced ${secs(report.duration_secs)}, sampled every ${secs(report.interval_secs)}`,
        report.sample_bytes ? `, sampling 1 in ${bytes(report.sample_bytes)}` : "",
        report.probes ? `, probes: ${report.probes.path}` : ""
      ),
      el(
        "div",
        { class: "summary" },
        figure("outstanding", bytes(t.outstanding_bytes)),
        figure("live allocations", count(t.outstanding_allocations)),
        figure("allocations / frees", `${count(t.allocations)} / ${count(t.frees)}`),
        figure("stacks holding memory", count(t.stacks_holding_memory)),
        figure("listed", `${stacks.length}${verdictLine ? " (" + verdictLine + ")" : ""}`),
        report.overhead ? figure("tracing cost", `${(report.overhead.cpu_share * 100).toFixed(1)} % of a CPU`) : null
      )
    );
  }

  function oomBanner(kill, stacks, open) {
    return el(
      "section",
      { class: "banner", role: "alert", "data-pid": kill.pid },
      el("h2", {}, `OOM kill at ${secs(kill.t)}: ${kill.comm} (${kill.pid})`),
      el(
        "div",
        {},
        `${kill.time}. Anonymous RSS ${bytes(kill.anon_rss_bytes)}, file ${bytes(kill.file_rss_bytes)}, ` +
          `virtual ${bytes(kill.total_vm_bytes)}` +
          (kill.traced ? `; memtrace saw ${bytes(kill.traced_outstanding_bytes)} outstanding.` : "; it was not traced.")
      ),
      stacks.length ? el("h3", {}, "What it held when killed") : null,
      el(
        "ul",
        { class: "frame-list" },
        stacks.map((s) =>
          el(
            "li",
            {},
            el("button", { type: "button", onclick: () => open(s) }, bytes(s.outstanding_bytes)),
            " ",
            badge(s.verdict),
            " ",
            el("code", {}, s.frames.length ? frameName(s.frames[0]) : "?"),
            el("span", { class: "where" }, s.frames.length ? frameWhere(s.frames[0]) : "")
          )
        )
      )
    );
  }

  function lossesPanel(report) {
    const losses = Object.entries(report.losses).filter(([, n]) => n > 0);
    const panel = el("section", { class: "panel", id: "losses" }, el("h2", {}, "Losses"));
    if (!losses.length) {
      panel.append(el("div", {}, "None: every allocation and free of the traced processes was counted."));
    } else {
      panel.append(
        el("div", { class: "warn" }, "Some events were lost; the figures below may miss them:"),
        el("ul", {}, losses.map(([name, n]) => el("li", {}, el("code", {}, name), ": ", count(n))))
      );
    }
    const single = report.probes && report.probes.single_stepped;
    if (single && single.length) {
      panel.append(el("div", { class: "warn" }, "Single-stepped probes (slower): ", single.join(", ")));
    }
    return panel;
  }

  function targetPanel(target) {
    const panel = el(
      "section",
      { class: "panel target" },
      el("h2", {}, `${target.comm} (${target.pid})`, target.exited ? " [exited]" : ""),
      el(
        "div",
        { class: "muted" },
        target.exe || "",
        target.container ? ` · ${target.container.runtime} ${target.container.id.slice(0, 12)}` : "",
        target.allocators && target.allocators.length ? ` · allocators: ${target.allocators.join(", ")}` : ""
      )
    );
    const memory = target.memory;
    if (!memory || memory.samples.length < 2) {
      panel.append(el("div", {}, `Outstanding: ${bytes(target.outstanding_bytes)} (no memory series).`));
      return panel;
    }
    panel.append(
      el(
        "div",
        {},
        `RSS ${perHour(memory.rss_growth_bytes_per_hour / 3600)}, anonymous ${perHour(memory.anon_growth_bytes_per_hour / 3600)}, ` +
          `traced ${perHour(memory.traced_growth_bytes_per_hour / 3600)}`,
        memory.explained_share === null || memory.explained_share === undefined
          ? ""
          : memory.explained_share > 1
          ? `; the traced stacks account for all of the growth (they grew ${memory.explained_share.toFixed(1)}× as fast)`
          : `; the traced stacks explain ${Math.round(memory.explained_share * 100)} % of the growth`,
        memory.alert ? el("b", { class: "warn" }, " — over the RSS alert threshold") : ""
      )
    );
    const box = el("div", { class: "chart" });
    panel.append(box);
    const xs = memory.samples.map((s) => s.t);
    mount(box, () =>
      lineChart(box, "Memory over time", xs, [
        { label: "RSS", values: memory.samples.map((s) => s.rss_bytes), color: color("rss") },
        { label: "anonymous", values: memory.samples.map((s) => s.anon_bytes), color: color("anon") },
        { label: "traced outstanding", values: memory.samples.map((s) => s.traced_bytes), color: color("traced") },
      ])
    );
    return panel;
  }

  // ---- the stack table -------------------------------------------------

  const COLUMNS = [
    { key: "verdict", label: "Verdict", sort: (s) => SEVERITY[s.verdict] ?? 9, asc: true },
    { key: "outstanding", label: "Outstanding", num: true, sort: (s) => s.outstanding_bytes },
    { key: "allocs", label: "Live allocs", num: true, sort: (s) => s.outstanding_allocations },
    { key: "growth", label: "Growth", num: true, sort: (s) => (s.rated ? s.growth_bytes_per_sec : -Infinity) },
    { key: "age", label: "Oldest", num: true, sort: (s) => s.oldest_age_secs ?? -1 },
    { key: "series", label: "Series" },
    { key: "frames", label: "Allocated at (innermost first)" },
  ];

  function stackTable(stacks, comms, open) {
    const state = { text: "", verdict: "", frame: null, sortKey: null, sortDir: -1, shown: ROWS_PER_PAGE, selected: null };
    const search = el("input", { type: "search", placeholder: "Filter by function, file or process", "aria-label": "Filter stacks", size: 36 });
    const verdictSelect = el(
      "select",
      { "aria-label": "Verdict" },
      el("option", { value: "" }, "every verdict"),
      ["leak", "growing", "plateau", "stable"].map((v) => el("option", { value: v }, v))
    );
    const chip = el("button", { type: "button", class: "chip", hidden: true, title: "Clear the frame filter" });
    const status = el("span", { class: "muted", id: "stack-count" });
    const more = el("button", { type: "button", hidden: true });
    const body = el("tbody");
    const headRow = el("tr");
    for (const column of COLUMNS) {
      const th = el("th", { class: column.num ? "num" : "", scope: "col" });
      if (column.sort) {
        const button = el("button", { type: "button", "data-key": column.key }, column.label);
        button.addEventListener("click", () => {
          state.sortDir = state.sortKey === column.key ? -state.sortDir : column.asc ? 1 : -1;
          state.sortKey = column.key;
          state.shown = ROWS_PER_PAGE;
          for (const b of headRow.querySelectorAll("button")) b.removeAttribute("aria-sort");
          button.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
          draw();
        });
        th.append(button);
      } else {
        th.append(column.label);
      }
      headRow.append(th);
    }
    search.addEventListener("input", () => {
      state.text = search.value.trim().toLowerCase();
      state.shown = ROWS_PER_PAGE;
      draw();
    });
    verdictSelect.addEventListener("change", () => {
      state.verdict = verdictSelect.value;
      state.shown = ROWS_PER_PAGE;
      draw();
    });
    chip.addEventListener("click", () => api.filterFrame(null));
    more.addEventListener("click", () => {
      state.shown += ROWS_PER_PAGE;
      draw();
    });

    // What the text filter looks in, per stack: made on the first search.
    let haystack = null;
    function textOf(s) {
      if (!haystack) {
        haystack = new Map(
          stacks.map((s) => [
            s.id,
            [comms.get(s.pid) || "", String(s.pid)]
              .concat(s.frames.map((f) => `${frameName(f)} ${f.file || ""}${f.line ? ":" + f.line : ""} ${f.module || ""}`))
              .join("\n")
              .toLowerCase(),
          ])
        );
      }
      return haystack.get(s.id);
    }

    function visible() {
      let list = stacks.filter(
        (s) =>
          (!state.verdict || s.verdict === state.verdict) &&
          (!state.text || textOf(s).includes(state.text)) &&
          (!state.frame || state.frame.matches(s))
      );
      if (state.sortKey) {
        const key = COLUMNS.find((c) => c.key === state.sortKey).sort;
        list = list.slice().sort((a, b) => state.sortDir * (key(a) - key(b)));
      }
      return list;
    }

    function row(s) {
      const top = s.frames.slice(0, 3).map(frameName).join(" ← ") || "(no frames)";
      const tr = el(
        "tr",
        { tabindex: 0, "data-id": s.id, class: state.selected === s.id ? "selected" : "" },
        el("td", {}, badge(s.verdict)),
        el("td", { class: "num" }, bytes(s.outstanding_bytes)),
        el("td", { class: "num" }, count(s.outstanding_allocations)),
        el("td", { class: "num" }, s.rated ? perHour(s.growth_bytes_per_sec) : "—"),
        el("td", { class: "num" }, secs(s.oldest_age_secs)),
        el("td", {}, sparkline(s.series.t, s.series.bytes)),
        el(
          "td",
          { class: "frames", title: s.frames.map(frameName).join("\n") },
          el("code", {}, top),
          el("span", { class: "where" }, ` ${s.kind} · ${comms.get(s.pid) || ""} ${s.pid}`)
        )
      );
      tr.addEventListener("click", () => open(s));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open(s);
        } else if (e.key === "ArrowDown" && tr.nextElementSibling) {
          e.preventDefault();
          tr.nextElementSibling.focus();
        } else if (e.key === "ArrowUp" && tr.previousElementSibling) {
          e.preventDefault();
          tr.previousElementSibling.focus();
        }
      });
      return tr;
    }

    function draw() {
      const list = visible();
      body.replaceChildren(...list.slice(0, state.shown).map(row));
      status.textContent =
        list.length === stacks.length ? `${count(stacks.length)} stacks` : `${count(list.length)} of ${count(stacks.length)} stacks`;
      const left = list.length - state.shown;
      more.hidden = left <= 0;
      more.textContent = `Show ${Math.min(left, ROWS_PER_PAGE)} more (${count(left)} not shown)`;
      chip.hidden = !state.frame;
      if (state.frame) chip.textContent = `through ${state.frame.label} ✕`;
    }

    const api = {
      panel: el(
        "section",
        { class: "panel", id: "stacks" },
        el("h2", {}, "Stacks"),
        el("div", { class: "toolbar" }, search, verdictSelect, chip, status),
        el("table", { id: "stack-table" }, el("thead", {}, headRow), body),
        more
      ),
      /** Shows only the stacks that pass through an icicle node (null: all). */
      filterFrame(frame) {
        state.frame = frame;
        state.shown = ROWS_PER_PAGE;
        draw();
        if (frame) api.panel.scrollIntoView({ block: "start" });
        api.onFrame(frame);
      },
      onFrame() {},
      select(id) {
        state.selected = id;
        for (const tr of body.querySelectorAll("tr")) tr.classList.toggle("selected", tr.dataset.id === id);
      },
    };
    draw();
    return api;
  }

  // ---- one stack -------------------------------------------------------

  function stackDetail(s, comms) {
    const title = s.frames.length ? frameName(s.frames[0]) : "(no frames)";
    const out = [
      el("h2", { tabindex: -1 }, badge(s.verdict), " ", title),
      el(
        "div",
        { class: "muted" },
        `${s.kind} · ${comms.get(s.pid) || "pid"} ${s.pid} · ${bytes(s.outstanding_bytes)} in ${count(s.outstanding_allocations)} ` +
          `allocations outstanding · ${count(s.allocations)} allocations, ${count(s.frees)} frees, ${bytes(s.allocated_bytes)} allocated` +
          (s.rated ? ` · growth ${perHour(s.growth_bytes_per_sec)}` : "") +
          (s.peak ? ` · peak ${bytes(s.peak.bytes)} at ${secs(s.peak.t)}` : "")
      ),
      el("p", { class: "evidence" }, el("b", {}, "Why ", s.verdict, ": "), s.verdict_reason || "—"),
    ];
    const columns = el("div", { class: "columns" });
    const chartBox = el("div", { class: "chart", id: "stack-chart" });
    columns.append(el("div", {}, chartBox));
    if (s.age_histogram && s.age_histogram.length) {
      const ageBox = el("div", { class: "chart", id: "age-chart" });
      columns.append(el("div", {}, ageBox));
      mount(ageBox, () => ageChart(ageBox, s.age_histogram));
    }
    out.push(columns);
    if (s.series.t.length >= 2) {
      mount(chartBox, () => seriesChart(chartBox, s));
    } else {
      chartBox.append("One sample: no series to draw.");
    }
    out.push(
      el("h3", {}, "Frames", s.truncated ? " (walk cut short: outer callers missing)" : ""),
      el(
        "ol",
        { class: "frame-list", start: 0 },
        s.frames.map((f) =>
          el(
            "li",
            {},
            el("code", {}, frameName(f)),
            f.inlined ? el("span", { class: "muted" }, " (inlined)") : "",
            el("span", { class: "where" }, f.file ? `${f.file}${f.line ? ":" + f.line : ""}` : ""),
            el("span", { class: "where" }, f.module ? `${basename(f.module)} ${hex(f.address)}` : "")
          )
        )
      )
    );
    return out;
  }

  /**
   * The stack's outstanding bytes, its fitted growth line (Theil–Sen: the
   * report's slope, through the median offset of the points it was fitted
   * on) and the evidence of its verdict: the active window's first and
   * last thirds, whose growth tells a leak (growing in both) from a
   * plateau (flat in the last).
   */
  function seriesChart(box, s) {
    const xs = s.series.t;
    const ys = s.series.bytes;
    const peak = Math.max(...ys);
    const band = 0.05 * peak;
    const moved = ys.findIndex((y) => Math.abs(y - ys[0]) > band);
    const start = moved <= 0 ? 0 : moved - 1;
    // The rate was fitted on the window after its first point (a plateau's
    // on its flat tail, here its last third).
    let from = s.verdict === "plateau" ? start + Math.floor(((xs.length - start) * 2) / 3) : start + (xs.length - start > 4 ? 1 : 0);
    from = Math.min(from, xs.length - 2);
    const lines = [{ label: "outstanding", values: ys, color: color("traced") }];
    if (s.rated) {
      const slope = s.growth_bytes_per_sec;
      const offset = median(xs.slice(from).map((t, i) => ys[from + i] - slope * t));
      lines.push({
        label: `fitted ${perHour(slope)}`,
        values: xs.map((t, i) => (i >= from ? offset + slope * t : null)),
        color: color("fit"),
        dash: [6, 4],
      });
    }
    const t0 = xs[start];
    const span = xs[xs.length - 1] - t0;
    const evidence = (u) => {
      if (span <= 0) return;
      const ctx = u.ctx;
      const top = u.bbox.top;
      const height = u.bbox.height;
      ctx.save();
      ctx.strokeStyle = color("muted");
      ctx.fillStyle = color("muted");
      ctx.setLineDash([3, 3]);
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
      const thirds = [
        [0, `first third ${signedBytes(s.early_growth_bytes)}`],
        [1, null],
        [2, `last third ${signedBytes(s.late_growth_bytes)}`],
      ];
      for (const [i, label] of thirds) {
        const x = u.valToPos(t0 + (span * i) / 3, "x", true);
        if (i > 0) {
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
        }
        if (label) ctx.fillText(label, x + 4 * devicePixelRatio, top + 4 * devicePixelRatio);
      }
      ctx.restore();
    };
    const chart = lineChart(box, "Outstanding over time", xs, lines, evidence);
    box.dataset.points = String(xs.length);
    return chart;
  }

  // ---- the icicle graph ------------------------------------------------

  const WEIGHTS = {
    outstanding: { label: "outstanding bytes", of: (s) => s.outstanding_bytes, fmt: bytes },
    growth: { label: "growth", of: (s) => (s.rated && s.growth_bytes_per_sec > 0 ? s.growth_bytes_per_sec : 0), fmt: perHour },
    allocated: { label: "allocated bytes", of: (s) => s.allocated_bytes, fmt: bytes },
    count: { label: "live allocations", of: (s) => s.outstanding_allocations, fmt: count },
  };

  /**
   * Callers above callees, outermost at the top, each node as wide as the
   * weight of the stacks through it. A click filters the stack table to
   * the stacks through that node (the same path from the root).
   */
  function icicle(stacks, table) {
    const select = el(
      "select",
      { "aria-label": "Width by" },
      Object.entries(WEIGHTS).map(([key, w]) => el("option", { value: key }, w.label))
    );
    const graph = el("div", { class: "icicle", id: "icicle", role: "group", "aria-label": "Icicle graph" });
    const note = el("span", { class: "muted" });
    const panel = el(
      "section",
      { class: "panel", id: "flame" },
      el("h2", {}, "Icicle graph"),
      el("div", { class: "toolbar" }, el("label", {}, "Width by ", select), note),
      graph
    );
    let selected = null;
    table.onFrame = (frame) => {
      selected = frame ? frame.path : null;
      for (const b of graph.querySelectorAll("button")) {
        b.classList.toggle("on", selected !== null && b.dataset.path === selected);
      }
    };
    const ROW = 20;
    const MIN_SHARE = 0.002;

    function build(weightOf) {
      const root = { name: "all", weight: 0, children: new Map(), depth: 0 };
      for (const s of stacks) {
        const w = weightOf(s);
        if (!(w > 0)) continue;
        root.weight += w;
        let node = root;
        for (let i = s.frames.length - 1; i >= 0; i--) {
          const name = frameName(s.frames[i]);
          let child = node.children.get(name);
          if (!child) {
            child = { name, weight: 0, children: new Map(), depth: node.depth + 1 };
            node.children.set(name, child);
          }
          child.weight += w;
          node = child;
        }
      }
      return root;
    }

    function draw() {
      const weight = WEIGHTS[select.value];
      const root = build(weight.of);
      graph.replaceChildren();
      if (!root.weight) {
        graph.style.height = "auto";
        graph.append(el("div", { style: "padding: 8px" }, `No stack has any ${weight.label}.`));
        note.textContent = "";
        return;
      }
      let depth = 0;
      let hidden = 0;
      const place = (node, left, path, parity) => {
        const share = node.weight / root.weight;
        if (share < MIN_SHARE) {
          hidden++;
          return;
        }
        depth = Math.max(depth, node.depth);
        const label = `${node.name} — ${weight.fmt(node.weight)} (${(share * 100).toFixed(1)} %)`;
        const button = el(
          "button",
          {
            type: "button",
            class: (parity ? "alt" : "") + (path === selected ? " on" : ""),
            style: `left: ${(left * 100).toFixed(4)}%; width: ${(share * 100).toFixed(4)}%; top: ${node.depth * ROW}px`,
            title: label,
            "aria-label": label,
            "data-path": path,
            "data-name": node.name,
          },
          node.name
        );
        button.addEventListener("click", () => {
          if (node.depth === 0) return table.filterFrame(null);
          const names = path.split("\u0000").slice(1);
          table.filterFrame({
            path,
            label: node.name,
            matches: (s) =>
              s.frames.length >= names.length &&
              names.every((name, i) => frameName(s.frames[s.frames.length - 1 - i]) === name),
          });
        });
        graph.append(button);
        let x = left;
        let i = 0;
        const children = Array.from(node.children.values()).sort((a, b) => b.weight - a.weight);
        for (const child of children) {
          place(child, x, path + "\u0000" + child.name, (i++ + node.depth) % 2 === 0);
          x += child.weight / root.weight;
        }
      };
      place(root, 0, "all", false);
      graph.style.height = `${(depth + 1) * ROW + 2}px`;
      note.textContent = `${weight.fmt(root.weight)} in all` + (hidden ? ` · ${count(hidden)} frame${hidden === 1 ? "" : "s"} narrower than 0.2 % not drawn` : "");
    }
    select.addEventListener("change", draw);
    draw();
    return panel;
  }

  // ---- a diff ----------------------------------------------------------

  function renderDiff(d) {
    const side = (s) =>
      s.targets.map((t) => `${t.comm || "?"} (${t.pid})`).join(", ") + (s.duration_secs ? `, ${secs(s.duration_secs)}` : "");
    const t = d.totals;
    app.append(
      el(
        "header",
        { class: "panel" },
        el("h1", {}, "memtrace diff"),
        el("div", { class: "muted" }, "before: ", side(d.before), " · after: ", side(d.after)),
        el(
          "div",
          { class: "summary" },
          el("div", {}, el("b", {}, `${bytes(t.before.outstanding_bytes)} → ${bytes(t.after.outstanding_bytes)}`), el("span", { class: "muted" }, "outstanding")),
          el("div", {}, el("b", {}, signedBytes(t.delta_bytes)), el("span", { class: "muted" }, "change")),
          el("div", {}, el("b", {}, `${t.grew} grew, ${t.new} new, ${t.gone} gone`), el("span", { class: "muted" }, `${t.shrank} shrank, ${t.same} same`))
        )
      )
    );
    const column = (status, title, list) =>
      el(
        "section",
        { class: "panel", id: "diff-" + status },
        el("h2", {}, badge(status, title), " ", el("span", { class: "muted" }, `${list.length} stacks`)),
        list.length
          ? el(
              "table",
              {},
              el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Change"), el("th", { class: "num" }, "Before → after"), el("th", {}, "Allocated at"))),
              el(
                "tbody",
                {},
                list.map((s) =>
                  el(
                    "tr",
                    { tabindex: 0 },
                    el("td", { class: "num" }, signedBytes(s.delta_bytes)),
                    el("td", { class: "num" }, `${bytes(s.before.outstanding_bytes)} → ${bytes(s.after.outstanding_bytes)}`),
                    el(
                      "td",
                      { class: "frames", title: s.frames.join("\n") },
                      s.after.verdict ? badge(s.after.verdict) : "",
                      " ",
                      el("code", {}, s.frames.slice(0, 3).join(" ← ") || "(no frames)"),
                      el("span", { class: "where" }, s.location ? " " + s.location : "")
                    )
                  )
                )
              )
            )
          : el("div", { class: "muted" }, "none")
      );
    const of = (status) => d.stacks.filter((s) => s.status === status);
    app.append(el("div", { class: "columns" }, column("grew", "grew", of("grew")), column("new", "new", of("new")), column("gone", "gone", of("gone"))));
    const shrank = of("shrank");
    if (shrank.length) app.append(column("shrank", "shrank", shrank));
  }

  // ---- start -----------------------------------------------------------

  if (payload.kind === "memtrace-diff") renderDiff(payload.data);
  else renderReport(payload.data, payload.frames);
  timings.drawn = performance.now();
  window.memtraceTimings = timings;
  requestAnimationFrame(() => {
    window.memtraceReady = performance.now();
    document.body.dataset.ready = "1";
  });
})();
