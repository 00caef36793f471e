// queuectl dashboard: live updates (plain fetch) and actions. Every value
// from the server goes into the page as text (textContent), never as HTML.
"use strict";
(function () {
  const body = document.body;
  const base = body.dataset.base || "";
  const page = body.dataset.page;
  const REFRESH_MS = 2000;

  function notice(text, bad) {
    const el = document.getElementById("notice");
    el.textContent = text;
    el.className = bad ? "bad" : "good";
    el.hidden = false;
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1000) return ms + "ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
    const s = Math.floor(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }

  async function getJSON(path) {
    const r = await fetch(base + path, {headers: {"Accept": "application/json"}});
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    return r.json();
  }

  // ------------------------------------------------------------ token
  const tokenInput = document.getElementById("token");
  if (tokenInput) {
    tokenInput.value = sessionStorage.getItem("queuectl-token") || "";
    tokenInput.addEventListener("change", () => sessionStorage.setItem("queuectl-token", tokenInput.value));
  }

  async function act(path, payload) {
    const headers = {"Accept": "application/json"};
    const token = tokenInput ? tokenInput.value : "";
    if (token) headers["X-Queuectl-Token"] = token;
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(base + path, {method: "POST", headers: headers,
      body: payload === undefined ? undefined : JSON.stringify(payload)});
    let data = {};
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) {
      notice("Refused (" + r.status + "): " + (typeof data.detail === "string" ? data.detail : r.statusText), true);
      return null;
    }
    notice(data.message || "Done.", data.ok === false);
    return data;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.action");
    if (!button) return;
    const kind = button.dataset.action;
    const id = encodeURIComponent(button.dataset.job || "");
    let done = null;
    if (kind === "retry") done = await act("/api/job/retry?id=" + id);
    else if (kind === "cancel") done = await act("/api/job/cancel?id=" + id);
    else if (kind === "pause" || kind === "resume") done = await act("/api/queues/" + encodeURIComponent(button.dataset.queue) + "/" + kind);
    else if (kind === "dlq-retry-all") done = await act("/api/dlq/retry", {all: true});
    else if (kind === "dlq-retry-selected") {
      const ids = Array.from(document.querySelectorAll("input.pick:checked")).map((el) => el.value);
      if (!ids.length) { notice("Select dead jobs first.", true); return; }
      done = await act("/api/dlq/retry", {ids: ids});
    }
    if (done && page !== "overview") setTimeout(() => location.reload(), 800);
  });

  const selectAll = document.getElementById("select-all");
  if (selectAll) selectAll.addEventListener("change", () => {
    document.querySelectorAll("input.pick").forEach((el) => { el.checked = selectAll.checked; });
  });

  // ------------------------------------------------------------ overview
  let charts = null;

  function chartData(series) {
    const t = series.t;
    const nulls = (xs) => xs.map((x) => (x === null ? null : x));
    return {
      throughput: [t, series.completed, series.failed],
      latency: [t, nulls(series.run_p50_ms), nulls(series.run_p95_ms)],
    };
  }

  function drawCharts(series) {
    if (typeof uPlot === "undefined") return;
    const data = chartData(series);
    if (charts) {
      charts.throughput.setData(data.throughput);
      charts.latency.setData(data.latency);
      return;
    }
    const width = (id) => Math.max(300, document.getElementById(id).clientWidth || 520);
    const opts = (id, labels, colors, unit) => ({
      width: width(id), height: 200,
      series: [{}].concat(labels.map((label, i) => ({label: label, stroke: colors[i], width: 2,
        points: {show: true, size: 4}, spanGaps: unit === "ms",
        value: (u, v) => (v === null ? "-" : unit === "ms" ? duration(v) : v)}))),
      axes: [{}, {size: 64, values: (u, ticks) => ticks.map((v) => (unit === "ms" ? duration(v) : v))}],
      scales: {x: {time: true}},
    });
    charts = {
      throughput: new uPlot(opts("chart-throughput", ["completed", "failed"], ["#2a9d58", "#d0453a"], ""),
                            data.throughput, document.getElementById("chart-throughput")),
      latency: new uPlot(opts("chart-latency", ["p50", "p95"], ["#3a6fd0", "#b07a16"], "ms"),
                         data.latency, document.getElementById("chart-latency")),
    };
  }

  function setText(selector, value) {
    const el = document.querySelector(selector);
    if (el && el.textContent !== String(value)) {
      el.textContent = value;
      el.classList.add("changed");
      setTimeout(() => el.classList.remove("changed"), 600);
    }
    return el;
  }

  function addQueueRow(row, states) {
    const tbody = document.querySelector("#queues tbody");
    const empty = tbody.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.dataset.queue = row.queue;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = base + "/jobs?queue=" + encodeURIComponent(row.queue);
    link.textContent = row.queue;
    name.appendChild(link);
    tr.appendChild(name);
    for (const state of states) {
      const td = document.createElement("td");
      td.className = "num";
      td.dataset.count = row.queue + ":" + state;
      tr.appendChild(td);
    }
    const oldest = document.createElement("td");
    oldest.dataset.oldest = row.queue;
    tr.appendChild(oldest);
    const paused = document.createElement("td");
    paused.dataset.paused = row.queue;
    tr.appendChild(paused);
    tbody.appendChild(tr);
  }

  function cell(attr, key) {
    return Array.from(document.querySelectorAll("[" + attr + "]")).find((el) => el.getAttribute(attr) === key);
  }

  function updateOverview(data) {
    for (const state of data.states) setText('[data-total="' + state + '"]', data.totals[state]);
    setText("#active-workers", data.active_workers);
    for (const row of data.queues) {
      if (!cell("data-count", row.queue + ":" + data.states[0])) addQueueRow(row, data.states);
      for (const state of data.states) {
        const el = cell("data-count", row.queue + ":" + state);
        if (el && el.textContent !== String(row.counts[state])) {
          el.textContent = row.counts[state];
          el.classList.add("changed");
          setTimeout(() => el.classList.remove("changed"), 600);
        }
      }
      const oldest = cell("data-oldest", row.queue);
      if (oldest) oldest.textContent = duration(row.oldest_due_age_ms);
      const paused = cell("data-paused", row.queue);
      if (paused) paused.textContent = row.paused ? "paused" : "";
    }
    drawCharts(data.series);
  }

  async function refreshOverview() {
    try {
      updateOverview(await getJSON("/api/overview"));
    } catch (e) {
      notice("Cannot refresh: " + e.message, true);
    }
  }

  if (page === "overview") {
    window.addEventListener("load", refreshOverview);
    setInterval(refreshOverview, REFRESH_MS);
  }

  // ------------------------------------------------------------ job log
  const log = document.getElementById("log");
  if (log) {
    const info = document.getElementById("log-info");
    let stream = "out";
    let lastBytes = -1;
    let live = log.dataset.running === "yes";

    async function refreshLog() {
      try {
        const id = encodeURIComponent(log.dataset.job);
        const data = await getJSON("/api/job/log?id=" + id + "&stream=" + stream);
        if (data.bytes !== lastBytes) {
          const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
          log.textContent = data.text;
          if (follow) log.scrollTop = log.scrollHeight;
          lastBytes = data.bytes;
        }
        info.textContent = data.attempt === null ? "no output on this machine"
          : "attempt " + data.attempt + ", " + data.bytes + " bytes" + (data.truncated ? " (the end)" : "") + (live ? " · following" : "");
        if (live) {
          const state = await getJSON("/api/job?id=" + id);
          const badge = document.getElementById("job-state");
          if (badge.textContent !== state.job.state) {
            badge.textContent = state.job.state;
            badge.className = "badge state-" + state.job.state;
          }
          live = ["pending", "processing", "failed", "waiting"].includes(state.job.state);
          if (!live) setTimeout(refreshLog, 200);  // the last lines
        }
      } catch (e) {
        info.textContent = "cannot read the output: " + e.message;
      }
    }
    document.querySelectorAll('input[name="stream"]').forEach((el) => el.addEventListener("change", () => {
      stream = el.value;
      lastBytes = -1;
      refreshLog();
    }));
    refreshLog();
    setInterval(() => { if (live) refreshLog(); }, 1000);
  }
})();
