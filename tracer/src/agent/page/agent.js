// The memtrace agent's page: draws GET /api/state (the processes the agent
// shows, the traces running, recent OOM kills, the incidents) and refreshes
// it every scan interval; "Trace" runs POST /trace?keep=true and shows the
// incident it made. When the agent has a token the page asks for it once
// (kept in this tab's sessionStorage, sent as a bearer header) and gets a
// session cookie so that incident reports open as links. Everything from a
// process is set as text. When first drawn, <body> gets data-ready="1";
// window.memtraceRefreshes counts the states drawn (the tests wait on both).
"use strict";

(function () {
  const { el, color, bytes, perHour, secs, count, badge, lineChart, mount, forget, sparkline } = memtraceUi;
  const app = document.getElementById("app");
  const TOKEN_KEY = "memtrace-token";
  const DURATIONS = [
    ["10s", "10 s"],
    ["30s", "30 s"],
    ["1m", "1 min"],
    ["5m", "5 min"],
  ];
  let token = sessionStorage.getItem(TOKEN_KEY);
  let state = null;
  /** The process whose chart is open, and the one picked to trace. */
  let opened = null;
  let picked = null;
  /** A trace started here and not answered yet: {pid, comm, started, seconds}. */
  let running = null;
  let timer = null;
  window.memtraceRefreshes = 0;

  class NeedToken extends Error {}

  /** A request to the agent, with the token when the page has one. */
  async function api(method, path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) throw new NeedToken();
    if (!response.ok) throw new Error((await response.text()).trim() || response.status + " " + response.statusText);
    return response;
  }

  // ---- the token -----------------------------------------------------

  function askForToken(why) {
    clearTimeout(timer);
    const input = el("input", { type: "password", id: "token", autocomplete: "off", required: true, "aria-describedby": "token-why" });
    const message = el("p", { id: "token-why", class: why ? "warn" : "muted" }, why || "Kept for this tab only, and sent as a bearer header.");
    const form = el(
      "form",
      { class: "panel", id: "login", onsubmit: (e) => signIn(e, input, message) },
      el("h2", {}, "This agent needs its token"),
      el("label", { for: "token" }, "Token "),
      input,
      " ",
      el("button", { type: "submit" }, "Sign in"),
      message
    );
    app.replaceChildren(form);
    input.focus();
  }

  async function signIn(event, input, message) {
    event.preventDefault();
    token = input.value.trim();
    try {
      // The session cookie lets incident reports open as plain links.
      await api("POST", "/api/session");
      sessionStorage.setItem(TOKEN_KEY, token);
      app.replaceChildren();
      await refresh();
    } catch (e) {
      token = null;
      message.className = "warn";
      message.textContent = e instanceof NeedToken ? "That is not this agent's token." : "Cannot sign in: " + e.message;
      input.select();
    }
  }

  // ---- the state -----------------------------------------------------

  /** Draws the page, after asking for the token if the agent wants one not yet shown. */
  async function start() {
    if (token) {
      // The session cookie (what opens the report links) may be gone: the
      // agent restarted, or it expired. A new one, with the token.
      try {
        await api("POST", "/api/session");
      } catch (e) {
        if (e instanceof NeedToken) {
          sessionStorage.removeItem(TOKEN_KEY);
          token = null;
          return askForToken("That token is no longer accepted.");
        }
      }
    } else {
      try {
        const session = await (await api("GET", "/api/session")).json();
        if (session.token && !session.admitted) return askForToken(null);
      } catch (e) {
        showError("Cannot reach the agent: " + e.message);
      }
    }
    await refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      state = await (await api("GET", "/api/state")).json();
    } catch (e) {
      if (e instanceof NeedToken) return askForToken(token ? "That token is no longer accepted." : null);
      showError("Cannot reach the agent: " + e.message);
      timer = setTimeout(refresh, 5000);
      return;
    }
    const error = document.getElementById("error");
    if (error) error.remove();
    draw();
    window.memtraceRefreshes++;
    document.body.dataset.ready = "1";
    timer = setTimeout(refresh, Math.max(2, Math.min(state.scan_interval_secs, 30)) * 1000);
  }

  function showError(text) {
    let box = document.getElementById("error");
    if (!box) {
      box = el("p", { id: "error", class: "banner", role: "alert" });
      app.prepend(box);
    }
    box.textContent = text;
  }

  /**
   * Draws the state into the page's slots, keeping the focus on the control
   * that had it. The trace panel is not redrawn here: its form, progress
   * and result stay as they are (and keep the focus).
   */
  const SLOTS = ["header", "oom", "tracing", "trace", "processes", "incidents"];
  function draw() {
    const focused = document.activeElement && document.activeElement.dataset.key;
    if (!document.getElementById("slot-header")) {
      app.replaceChildren(...SLOTS.map((name) => (name === "trace" ? tracePanel() : el("div", { id: "slot-" + name }))));
    }
    forget((entry) => entry.box.closest("#app") !== null);
    const drawn = { header: header(), oom: ooms(), tracing: traces(), processes: processes(), incidents: incidents() };
    for (const [name, section] of Object.entries(drawn)) {
      document.getElementById("slot-" + name).replaceChildren(...(section ? [section] : []));
    }
    drawTracePanel();
    if (focused) {
      const again = app.querySelector(`[data-key="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  function header() {
    const flagged = state.processes.filter((p) => p.suspect).length;
    const summary = [
      ["watched", count(state.watched)],
      ["flagged", count(flagged)],
      ["tracing now", count(state.tracing.length)],
      ["incidents", count(state.incidents.length)],
      ["recent OOM kills", count(state.oom_kills.length)],
    ];
    return el(
      "header",
      { class: "panel" },
      el("h1", {}, "memtrace agent on ", state.node),
      el("p", { class: "muted" }, `memtrace ${state.version}; ${state.settings}.`),
      el("div", { class: "summary" }, summary.map(([label, value]) => el("div", {}, el("b", {}, value), label)))
    );
  }

  function ooms() {
    if (!state.oom_kills.length) return null;
    return el(
      "section",
      { class: "banner", id: "oom-kills" },
      el("h2", {}, "Recent OOM kills"),
      el(
        "ul",
        {},
        state.oom_kills.map((k) =>
          el(
            "li",
            {},
            el("b", {}, k.comm),
            ` (pid ${k.pid}) at ${k.time}: ${bytes(k.anon_rss_bytes)} anonymous of ${bytes(k.total_vm_bytes)} virtual`,
            where(k) ? " in " + where(k) : ""
          )
        )
      )
    );
  }

  function where(x) {
    if (x.pod) return "pod " + x.pod + (x.container ? " / " + x.container : "");
    if (x.container) return "container " + x.container;
    return x.cgroup && x.cgroup !== "/" ? x.cgroup : "";
  }

  function traces() {
    const list = state.tracing.map((t) =>
      el("li", {}, `pid ${t.pid} `, el("b", {}, t.comm || "?"), t.on_demand ? " (asked for)" : " (flagged)")
    );
    return el(
      "section",
      { class: "panel", id: "tracing" },
      el("h2", {}, "Traces running: " + state.tracing.length),
      list.length ? el("ul", {}, list) : el("p", { class: "muted" }, "None.")
    );
  }

  // ---- processes -----------------------------------------------------

  function processes() {
    const tracing = new Set(state.tracing.map((t) => t.pid));
    // Flagged and traced first, then by anonymous memory.
    const rows = state.processes.slice().sort((a, b) => {
      const rank = (p) => (p.suspect || tracing.has(p.pid) ? 0 : 1);
      return rank(a) - rank(b) || b.anon_bytes - a.anon_bytes;
    });
    const head = ["PID", "Name", "Container / pod", "Resident", "Anonymous", "Memory", "Growth", "Verdict", "Why", "Traced", ""];
    const numeric = new Set(["PID", "Resident", "Anonymous", "Growth"]);
    const section = el(
      "section",
      { class: "panel", id: "processes" },
      el("h2", {}, "Processes"),
      el(
        "p",
        { class: "muted" },
        `${count(state.watched)} watched; shown: the largest by anonymous memory, every flagged and every traced one. ` +
          "Memory: resident (blue) and anonymous (teal) over the last scans."
      ),
      el(
        "table",
        { id: "process-table" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: numeric.has(h) ? "num" : null, scope: "col" }, h)))),
        el("tbody", {}, rows.map((p) => processRow(p, tracing.has(p.pid))))
      )
    );
    const chosen = state.processes.find((p) => p.pid === opened);
    if (chosen) section.append(processChart(chosen));
    return section;
  }

  function processRow(p, tracingNow) {
    const growth = p.verdict === "leak" || p.verdict === "growing" ? perHour(p.bytes_per_hour / 3600) : "";
    const traced = tracingNow ? el("span", { class: "chip" }, "tracing now") : p.traced_bytes !== null ? "held " + bytes(p.traced_bytes) : "";
    const busy = tracingNow || (running !== null && running.pid === p.pid);
    return el(
      "tr",
      { "data-pid": p.pid, class: [p.suspect ? "flagged" : "", p.pid === opened ? "selected" : ""].join(" ").trim() || null },
      el("td", { class: "num" }, p.pid),
      el(
        "td",
        {},
        el(
          "button",
          {
            class: "link name",
            "data-key": "open-" + p.pid,
            "aria-expanded": p.pid === opened ? "true" : "false",
            title: "Show its memory over time",
            onclick: () => {
              opened = opened === p.pid ? null : p.pid;
              draw();
            },
          },
          p.comm
        ),
        p.suspect ? el("span", { class: "chip flag" }, "flagged") : null
      ),
      el("td", { class: "mono" }, where(p)),
      el("td", { class: "num" }, bytes(p.rss_bytes)),
      el("td", { class: "num" }, bytes(p.anon_bytes)),
      el("td", {}, sparkline(p.series.t, p.series.rss, p.series.anon)),
      el("td", { class: "num" }, growth),
      el("td", {}, p.verdict ? badge(p.verdict) : el("span", { class: "muted" }, "watching")),
      el("td", { class: "why" }, p.reason),
      el("td", {}, traced),
      el(
        "td",
        {},
        el(
          "button",
          {
            class: "trace",
            "data-key": "trace-" + p.pid,
            disabled: busy,
            title: busy ? "Being traced" : "Trace this process now",
            onclick: () => pick(p),
          },
          "Trace…"
        )
      )
    );
  }

  function processChart(p) {
    const box = el("div", { class: "chart", id: "process-chart" });
    const panel = el("div", { id: "process-detail" }, el("h3", {}, `${p.comm} (pid ${p.pid})`), box);
    const t0 = state.scanned;
    // Seconds before the last scan (negative), so the axis reads "ago".
    const xs = p.series.t.map((t) => t - t0);
    mount(box, () =>
      lineChart(box, "Memory over the last scans (seconds before the last)", xs, [
        { label: "resident", values: p.series.rss, color: color("rss") },
        { label: "anonymous", values: p.series.anon, color: color("anon") },
      ])
    );
    return panel;
  }

  // ---- "trace this process" ------------------------------------------

  function pick(p) {
    picked = { pid: p.pid, comm: p.comm };
    drawTracePanel();
    const start = document.getElementById("trace-start");
    if (start) start.focus();
  }

  function tracePanel() {
    return el(
      "section",
      { class: "panel", id: "trace-panel", "aria-live": "polite" },
      el("h2", {}, "Trace a process"),
      el("div", { id: "trace-body", tabindex: "-1" }),
      el("div", { id: "trace-result" })
    );
  }

  /** The trace panel's form or progress (its result stays until the next trace). */
  function drawTracePanel() {
    const body = document.getElementById("trace-body");
    if (!body) return;
    // Drawn again only when what it shows changes (a choice in progress
    // survives the refreshes); a running trace's progress moves on.
    const mode = running ? "running" : picked ? "pick-" + picked.pid : "idle";
    if (running) {
      if (body.dataset.mode !== mode) {
        body.replaceChildren(
          el("p", {}, `Tracing pid ${running.pid} (`, el("b", {}, running.comm), `) for ${secs(running.seconds)}: `),
          el("progress", { id: "trace-progress", max: running.seconds, value: 0 }),
          el("span", { class: "muted", id: "trace-left" })
        );
      }
      body.dataset.mode = mode;
      const elapsed = (performance.now() - running.started) / 1000;
      document.getElementById("trace-progress").value = Math.min(elapsed, running.seconds);
      document.getElementById("trace-left").textContent =
        elapsed < running.seconds ? ` ${Math.ceil(running.seconds - elapsed)} s left` : " writing the report…";
      return;
    }
    if (body.dataset.mode === mode) return;
    body.dataset.mode = mode;
    if (!picked) {
      body.replaceChildren(el("p", { class: "muted" }, "Pick a process with its Trace… button."));
      return;
    }
    const select = el(
      "select",
      { id: "trace-duration", "aria-label": "for how long" },
      DURATIONS.map(([value, label]) => el("option", { value }, label))
    );
    body.replaceChildren(
      el(
        "form",
        { id: "trace-form", onsubmit: (e) => startTrace(e, select.value) },
        `Trace pid ${picked.pid} (`,
        el("b", {}, picked.comm),
        ") for ",
        select,
        " ",
        el("button", { type: "submit", id: "trace-start", "data-key": "trace-start" }, "Start trace"),
        " ",
        el("button", { type: "button", onclick: () => ((picked = null), drawTracePanel()) }, "Cancel")
      )
    );
  }

  async function startTrace(event, duration) {
    event.preventDefault();
    const seconds = { "10s": 10, "30s": 30, "1m": 60, "5m": 300 }[duration];
    running = Object.assign({}, picked, { started: performance.now(), seconds });
    picked = null;
    const result = document.getElementById("trace-result");
    result.replaceChildren();
    const ticker = setInterval(drawTracePanel, 500);
    drawTracePanel();
    // The form is gone: the focus goes to what replaced it.
    document.getElementById("trace-body").focus();
    let answer;
    try {
      const response = await api("POST", `/trace?pid=${running.pid}&duration=${duration}&keep=true`);
      answer = showIncident(await response.json());
    } catch (e) {
      if (e instanceof NeedToken) {
        clearInterval(ticker);
        running = null;
        return askForToken("Tracing needs the token.");
      }
      answer = el("p", { class: "warn", id: "trace-error", tabindex: "-1" }, `The trace of pid ${running.pid} failed: ${e.message}`);
    }
    clearInterval(ticker);
    running = null;
    result.replaceChildren(answer);
    drawTracePanel();
    // The result, for the keyboard: its report link, or the error.
    (document.getElementById("trace-report") || answer).focus();
    await refresh();
  }

  function showIncident(i) {
    const top = i.top_function ? [" Top: ", el("code", {}, i.top_function), " ", i.top_verdict ? badge(i.top_verdict) : ""] : [];
    return el(
      "div",
      { id: "trace-done" },
      el("p", {}, `Traced pid ${i.pid} (`, el("b", {}, i.comm), `): ${i.outcome}; its stacks hold ${bytes(i.outstanding_bytes)}.`, top),
      el(
        "p",
        {},
        el("a", { href: reportUrl(i.id, "html"), target: "_blank", rel: "noopener", id: "trace-report" }, "Open its report"),
        " · ",
        el("span", { class: "muted" }, "incident " + i.id)
      )
    );
  }

  // ---- incidents -----------------------------------------------------

  function reportUrl(id, format) {
    return `/reports/${encodeURIComponent(id)}` + (format === "json" ? "" : `?format=${format}`);
  }

  function incidents() {
    const head = ["Incident", "Started", "PID", "Name", "Reason", "Outcome", "Held", "Top", "Files"];
    const rows = state.incidents.map((i) =>
      el(
        "tr",
        { "data-id": i.id },
        el("td", {}, el("a", { href: reportUrl(i.id, "html"), target: "_blank", rel: "noopener", "data-key": "incident-" + i.id }, i.id)),
        el("td", {}, i.started),
        el("td", { class: "num" }, i.pid),
        el("td", {}, i.comm),
        el("td", { title: i.detail }, i.reason),
        el("td", {}, i.outcome),
        el("td", { class: "num" }, bytes(i.outstanding_bytes)),
        el("td", {}, i.top_function ? [el("code", {}, i.top_function), " ", i.top_verdict ? badge(i.top_verdict) : ""] : ""),
        el(
          "td",
          { class: "files" },
          ["text", "json", "svg", "pprof"].flatMap((f) => [el("a", { href: reportUrl(i.id, f), target: "_blank", rel: "noopener" }, f), " "])
        )
      )
    );
    return el(
      "section",
      { class: "panel", id: "incidents" },
      el("h2", {}, "Incidents: " + state.incidents.length),
      rows.length
        ? el(
            "table",
            { id: "incident-table" },
            el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", class: h === "PID" || h === "Held" ? "num" : null }, h)))),
            el("tbody", {}, rows)
          )
        : el("p", { class: "muted" }, "None kept.")
    );
  }

  start();
})();
