// firegate console: sites and open alarms, live from /api/v1/stream; acknowledge, resolve.
// Rules kept here: text from devices and people only ever reaches the page as text nodes
// and textContent (no HTML parsing of data at all), control characters are shown as visible
// symbols, the token stays in this tab's sessionStorage, and the stream is opened with a
// short-lived ticket.
"use strict";
(function () {
  const I18N = {
    zh: {
      title: "消防监控台", conn_off: "未连接", conn_live: "实时", conn_retry: "重新连接中",
      conn_replaced: "已在别处打开（刷新以接管）",
      logout: "退出", login_title: "值班登录", token: "访问令牌", login: "登录",
      login_hint: "令牌只保存在本标签页（sessionStorage），关闭即清除。",
      sites: "场所", open_alarms: "未处理报警", no_alarms: "当前没有未处理的报警",
      col_priority: "级别", col_time: "时间", col_site: "场所", col_what: "报警",
      col_source: "部位", col_state: "状态", col_ack: "确认",
      acknowledge: "确认", resolve: "处置结案", note_optional: "备注（可选）",
      verdict_real: "真实火警", verdict_false: "误报", verdict_test: "测试",
      timeline: "时间线", unacked: "未确认", acked_by: "已确认：", online: "在线",
      offline: "离线", gateways: "网关", open_n: "未处理", updated: "更新于 ",
      colour_red: "红色 · 危险", colour_yellow: "黄色 · 异常", colour_green: "绿色 · 正常",
      colour_null: "未评估", f_id: "编号", f_site: "场所", f_gateway: "网关", f_source: "部位",
      f_type: "类型", f_priority: "级别", f_state: "状态", f_raised: "报警时间",
      f_panel: "控制器时间", f_cleared: "恢复时间", f_count: "报警次数", f_ack: "确认",
      f_note: "确认备注", f_resolution: "处置", f_escalation: "升级", no_step: "未通知",
      step: "已通知第 {n} 级", bad_token: "令牌无效", by: "操作人：",
      prio_fire: "火警", prio_alarm: "报警", prio_event: "事件",
      st_active: "报警中", st_cleared: "已恢复",
      w_raised: "报警", "w_re-raised": "再次报警", w_notified: "已通知", w_acknowledged: "已确认",
      w_cleared: "已恢复", w_resolved: "已处置", w_escalation_stopped: "停止升级",
      t_fire_alarm: "火警", t_fault: "故障", t_supervisory: "监管", t_gateway_offline: "网关离线",
      t_records_missing: "数据缺失", t_threshold_low: "低于下限", t_threshold_high: "高于上限",
      t_power_fault: "电源故障", t_mains_power_fault: "主电故障",
      t_backup_power_fault: "备电故障", t_bus_fault: "总线故障", t_link_fault: "通信故障",
      t_sensor_offline: "传感器离线", t_door_open: "防火门开启", t_disabled: "屏蔽",
      t_device_error: "设备错误", t_out_of_range: "超量程",
      sound_on: "声音：开", sound_off: "声音：关", title_fire: "火警",
    },
    en: {
      title: "Fire monitoring console", conn_off: "offline", conn_live: "live",
      conn_retry: "reconnecting",
      conn_replaced: "opened elsewhere (reload to take over)",
      logout: "Sign out", login_title: "Duty sign-in",
      token: "Access token", login: "Sign in",
      login_hint: "The token is kept in this tab only (sessionStorage) and gone when it closes.",
      sites: "Sites", open_alarms: "Open alarms", no_alarms: "No open alarms",
      col_priority: "Priority", col_time: "Time", col_site: "Site", col_what: "Alarm",
      col_source: "Location", col_state: "State", col_ack: "Acknowledged",
      acknowledge: "Acknowledge", resolve: "Resolve", note_optional: "Note (optional)",
      verdict_real: "Real fire", verdict_false: "False alarm", verdict_test: "Test",
      timeline: "Timeline", unacked: "not acknowledged", acked_by: "by ", online: "online",
      offline: "offline", gateways: "gateways", open_n: "open", updated: "updated ",
      colour_red: "red · danger", colour_yellow: "yellow · trouble",
      colour_green: "green · normal", colour_null: "not assessed", f_id: "Id", f_site: "Site",
      f_gateway: "Gateway", f_source: "Location", f_type: "Type", f_priority: "Priority",
      f_state: "State", f_raised: "Raised", f_panel: "Panel time", f_cleared: "Cleared",
      f_count: "Raises", f_ack: "Acknowledged", f_note: "Note", f_resolution: "Resolution",
      f_escalation: "Escalation", no_step: "none notified", step: "step {n} notified",
      bad_token: "Token not valid", by: "by ",
      prio_fire: "FIRE", prio_alarm: "alarm", prio_event: "event",
      st_active: "active", st_cleared: "cleared",
      w_raised: "raised", "w_re-raised": "raised again", w_notified: "notified",
      w_acknowledged: "acknowledged", w_cleared: "cleared", w_resolved: "resolved",
      w_escalation_stopped: "escalation stopped",
      t_fire_alarm: "fire alarm", t_fault: "fault", t_gateway_offline: "gateway offline",
      sound_on: "sound: on", sound_off: "sound: off", title_fire: "FIRE",
    },
  };
  const PRIO = { fire: 0, alarm: 1, event: 2 };
  let lang = localStorage.getItem("firegate.lang") === "en" ? "en" : "zh";
  let sound = localStorage.getItem("firegate.sound") !== "off";
  let audio = null;
  const st = { token: null, me: null, sites: new Map(), alarms: new Map(), selected: null,
               es: null, retry: null, sitesTimer: null };

  const $ = (id) => document.getElementById(id);
  function t(key, vars) {
    let s = I18N[lang][key] ?? I18N.zh[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", String(v));
    return s;
  }
  const label = (prefix, value) => {
    const k = prefix + value;
    return (I18N[lang][k] ?? I18N.zh[k]) ? t(k) : String(value);
  };
  // Hostile text, the command line's rule (firegate/textsafe.py): C0 controls and DEL shown
  // as their control pictures (U+2400 block); C1 controls, the line and paragraph separators,
  // the bidirectional marks, embeddings, overrides and isolates (U+202A-202E, U+2066-2069: a
  // U+202E would show a location backwards) and zero-width / invisible characters shown as
  // escapes (\u202e), never applied. Length capped.
  const HIDDEN = /[\u0080-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g;
  function visible(text) {
    if (text === null || text === undefined) return "";
    let s = String(text).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g,
      (c) => c === "\u007f" ? "\u2421" : String.fromCharCode(0x2400 + c.charCodeAt(0)));
    s = s.replace(HIDDEN, (c) => c.charCodeAt(0) < 0x100
      ? "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0")
      : "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
    if (s.length > 2000) s = s.slice(0, 2000) + "…";
    return s;
  }
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === "string" ? document.createTextNode(visible(c)) : c);
    }
    return e;
  }
  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "—";
    return new Date(ms).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
  }

  // -- i18n ---------------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = "firegate · " + t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    $("lang").textContent = lang === "zh" ? "English" : "中文";
    $("sound").textContent = t(sound ? "sound_on" : "sound_off");
    setConn($("conn").dataset.state);
    renderSites(); renderAlarms(); if (st.selected) loadDetail(st.selected);
  }

  // -- API ----------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + st.token };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch(path, init);
    let doc = null;
    try { doc = await res.json(); } catch (e) { doc = null; }
    if (res.status === 401) { logout(t("bad_token")); throw new Error(t("bad_token")); }
    if (!res.ok) throw new Error((doc && doc.error && doc.error.message) || ("HTTP " + res.status));
    return doc;
  }

  // -- login --------------------------------------------------------------------------------
  async function login(token) {
    st.token = token;
    try {
      st.me = await api("GET", "/api/v1/me");
    } catch (e) {
      $("login-error").textContent = visible(e.message); return;
    }
    sessionStorage.setItem("firegate.token", token);
    $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
    $("who").textContent = visible(st.me.name) + " · " + st.me.role;
    await reload();
    connect();
    openFromLink();
  }
  // A link to one alarm (a notification's): <console>/#alarm=<id> opens its detail.
  function openFromLink() {
    const m = /^#alarm=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
    if (m) select(m[1]);
  }
  function logout(message) {
    sessionStorage.removeItem("firegate.token");
    st.token = null; st.me = null;
    if (st.es) { st.es.close(); st.es = null; }
    clearTimeout(st.retry);
    st.alarms.clear(); st.sites.clear(); closeDetail();
    $("main").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("who").textContent = ""; $("login-token").value = "";
    $("login-error").textContent = message || "";
    setConn("off");
  }

  async function reload() {
    const [sites, alarms] = await Promise.all([api("GET", "/api/v1/sites"), openAlarms()]);
    st.sites = new Map(sites.sites.map((s) => [s.id, s]));
    st.alarms = new Map(alarms.map((a) => [a.id, a]));
    renderSites(); renderAlarms();
  }
  // Every open alarm (what the stream keeps: a.open), page by page through "next" (one answer
  // holds at most the server's limit); at most 40 pages of the default 500.
  async function openAlarms() {
    const out = [];
    let path = "/api/v1/alarms?state=open";
    for (let i = 0; i < 40; i++) {
      const doc = await api("GET", path);
      out.push(...doc.alarms);
      if (!doc.next) break;
      path = "/api/v1/alarms?state=open&before_ms=" + encodeURIComponent(doc.next.before_ms) +
        "&before_id=" + encodeURIComponent(doc.next.before_id);
    }
    return out;
  }
  function refreshSitesSoon() {
    clearTimeout(st.sitesTimer);
    st.sitesTimer = setTimeout(async () => {
      try {
        const doc = await api("GET", "/api/v1/sites");
        st.sites = new Map(doc.sites.map((s) => [s.id, s])); renderSites();
      } catch (e) { /* the stream's reconnect reloads */ }
    }, 300);
  }

  // -- the stream ---------------------------------------------------------------------------
  function setConn(state) {
    const node = $("conn");
    node.dataset.state = state;
    node.textContent = t(state === "live" ? "conn_live" : state === "retry" ? "conn_retry" :
      state === "replaced" ? "conn_replaced" : "conn_off");
  }
  async function connect() {
    if (!st.token) return;
    if (st.es) { st.es.close(); st.es = null; }
    let ticket;
    try {
      ticket = (await api("POST", "/api/v1/stream-ticket")).ticket;
    } catch (e) { return retryLater(); }
    const es = new EventSource("/api/v1/stream?ticket=" + encodeURIComponent(ticket));
    st.es = es;
    let first = true;
    es.addEventListener("hello", async () => {
      setConn("live");
      if (!first) return;
      first = false;
      try { await reload(); } catch (e) { /* shown on the next try */ }
    });
    es.addEventListener("alarm", (ev) => {
      const doc = JSON.parse(ev.data);
      const a = doc.alarm;
      if (a.priority === "fire" && (doc.what === "raised" || doc.what === "re-raised")) beep();
      if (a.open) st.alarms.set(a.id, a); else st.alarms.delete(a.id);
      renderAlarms();
      if (st.selected === a.id) loadDetail(a.id);
      refreshSitesSoon();
    });
    es.addEventListener("site", (ev) => {
      const doc = JSON.parse(ev.data);
      const s = st.sites.get(doc.site) || { id: doc.site, open_alarms: 0, gateways_online: 0, gateways_offline: 0 };
      st.sites.set(doc.site, { ...s, colour: doc.colour, reasons: doc.reasons });
      renderSites(); refreshSitesSoon();
    });
    es.addEventListener("dropped", () => { es.close(); retryLater(); });
    // This user opened more consoles than the server keeps streams for: the newest won.
    // Reconnecting would take the stream back from it (and so on, for ever): stop here.
    es.addEventListener("replaced", () => {
      es.close(); if (st.es === es) st.es = null; clearTimeout(st.retry); setConn("replaced");
    });
    es.onerror = () => { es.close(); if (st.es === es) { st.es = null; retryLater(); } };
  }
  // A short two-tone alert for a new fire alarm (Web Audio; the sign-in click allows it).
  function beep() {
    if (!sound) return;
    try {
      audio = audio || new AudioContext();
      const now = audio.currentTime;
      for (const [i, freq] of [[0, 880], [1, 660], [2, 880]]) {
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = freq;
        gain.gain.value = 0.15;
        osc.connect(gain).connect(audio.destination);
        osc.start(now + i * 0.25);
        osc.stop(now + i * 0.25 + 0.2);
      }
    } catch (e) { /* no audio on this machine */ }
  }
  function retryLater() {
    setConn("retry");
    clearTimeout(st.retry);
    st.retry = setTimeout(connect, 2000);
  }

  // -- rendering ----------------------------------------------------------------------------
  function renderSites() {
    const ul = $("sites");
    ul.replaceChildren();
    const order = { red: 0, yellow: 1, green: 2 };
    const sites = [...st.sites.values()].sort((a, b) =>
      (order[a.colour] ?? 3) - (order[b.colour] ?? 3) || a.id.localeCompare(b.id));
    for (const s of sites) {
      const colour = s.colour || "null";
      ul.append(el("li", { class: "site", data: { colour, site: s.id } },
        el("span", { class: "dot" }),
        el("span", { class: "name", title: visible(s.id) }, s.id),
        el("span", { class: "count" + (s.open_alarms ? "" : " zero") }, String(s.open_alarms || 0)),
        el("span", { class: "meta" }, t("colour_" + colour) + " · " + t("gateways") + " " +
          s.gateways_online + " " + t("online") + " / " + s.gateways_offline + " " + t("offline")),
        (s.reasons && s.reasons.length) ? el("span", { class: "reasons" }, s.reasons.join("; ")) : null));
    }
  }
  function sortedAlarms() {
    return [...st.alarms.values()].sort((a, b) =>
      (a.acknowledged - b.acknowledged) || ((PRIO[a.priority] ?? 3) - (PRIO[b.priority] ?? 3)) ||
      (b.raised_ms - a.raised_ms));
  }
  function renderAlarms() {
    const body = $("alarms").tBodies[0];
    body.replaceChildren();
    const alarms = sortedAlarms();
    for (const a of alarms) {
      const tr = el("tr", { class: "prio-" + a.priority + (a.acknowledged ? " acked" : " unacked") +
                                   (st.selected === a.id ? " selected" : ""),
                            data: { id: a.id, priority: a.priority } },
        el("td", { class: "nowrap" }, el("span", { class: "tag " + a.priority }, label("prio_", a.priority))),
        el("td", { class: "nowrap" }, fmtTime(a.raised_ms)),
        el("td", { class: "nowrap" }, el("div", {}, a.site), el("div", { class: "sub" }, a.gateway)),
        el("td", { class: "nowrap" }, el("div", { class: "desc" }, label("t_", a.type)),
          (a.raise_count > 1) ? el("div", { class: "sub" }, "×" + a.raise_count) : null),
        el("td", {}, el("div", {}, a.description || "—"), el("div", { class: "sub" }, a.source)),
        el("td", { class: "nowrap" }, el("span", { class: "tag " + a.state }, label("st_", a.state))),
        el("td", { class: "ack-cell" }, a.acknowledged
          ? el("span", { class: "tag ack" }, t("acked_by") + (a.acknowledged_by || ""))
          : el("span", { class: "tag unack" }, t("unacked"))));
      tr.addEventListener("click", () => select(a.id));
      body.append(tr);
    }
    const n = $("alarm-count");
    n.textContent = String(alarms.length);
    n.className = "count" + (alarms.length ? "" : " zero");
    $("no-alarms").hidden = alarms.length > 0;
    const fires = alarms.filter((a) => a.priority === "fire" && !a.acknowledged).length;
    document.title = (fires ? "(" + fires + ") " + t("title_fire") + " · " : "") +
      "firegate · " + t("title");
    $("updated").textContent = t("updated") + fmtTime(Date.now());
  }

  // -- detail and actions -------------------------------------------------------------------
  function select(id) {
    st.selected = id;
    $("ack-note").value = ""; $("resolve-note").value = ""; $("action-error").textContent = "";
    renderAlarms();
    loadDetail(id);
  }
  function closeDetail() {
    st.selected = null;
    $("detail").hidden = true;
    $("main").classList.remove("with-detail");
    renderAlarms();
  }
  async function loadDetail(id) {
    let a;
    try { a = await api("GET", "/api/v1/alarms/" + encodeURIComponent(id)); }
    catch (e) { $("action-error").textContent = visible(e.message); return; }
    if (st.selected !== id) return;
    $("detail").hidden = false;
    $("main").classList.add("with-detail");
    $("detail").dataset.id = a.id;
    $("detail-title").textContent = visible(label("t_", a.type) + " · " + (a.description || a.source || a.gateway));
    const fields = $("detail-fields");
    fields.replaceChildren();
    const rows = [
      ["f_site", a.site], ["f_gateway", a.gateway], ["f_source", a.source || "—"],
      ["f_type", label("t_", a.type) + " (" + a.type + ")"], ["f_priority", label("prio_", a.priority)],
      ["f_state", label("st_", a.state)], ["f_raised", fmtTime(a.raised_ms)],
      ["f_panel", fmtTime(a.panel_ms)], ["f_cleared", fmtTime(a.cleared_ms)],
      ["f_count", String(a.raise_count)],
      ["f_ack", a.acknowledged ? (a.acknowledged_by + " · " + fmtTime(a.acknowledged_ms)) : t("unacked")],
      ["f_note", a.note || "—"],
      ["f_resolution", a.resolution ? (t("verdict_" + a.resolution) + " · " + (a.resolved_by || "") +
        (a.resolution_note ? " · " + a.resolution_note : "")) : "—"],
      ["f_escalation", (a.escalation_policy ? a.escalation_policy + " · " : "") +
        (a.escalation_step < 0 ? t("no_step") : t("step", { n: a.escalation_step + 1 }))],
      ["f_id", a.id],
    ];
    for (const [k, v] of rows) fields.append(el("dt", {}, t(k)), el("dd", {}, v));
    const operator = st.me && (st.me.role === "operator" || st.me.role === "admin");
    $("ack-box").hidden = !operator || a.acknowledged;
    $("resolve-box").hidden = !operator || a.resolution !== null;
    $("actions").hidden = !operator || (a.acknowledged && a.resolution !== null);
    const tl = $("timeline");
    tl.replaceChildren();
    for (const e of a.timeline) {
      tl.append(el("li", { data: { what: e.what } },
        el("div", { class: "when" }, fmtTime(e.at_ms)),
        el("div", { class: "text" }, label("w_", e.what) + (e.by ? " · " + t("by") + e.by : "") +
          (e.detail ? " · " + e.detail : ""))));
    }
  }
  async function act(kind) {
    const id = st.selected;
    if (!id) return;
    const button = $(kind === "ack" ? "ack-btn" : "resolve-btn");
    const note = $(kind === "ack" ? "ack-note" : "resolve-note").value.trim();
    const body = kind === "ack" ? {} : { verdict: $("verdict").value };
    if (note) body.note = note;
    button.disabled = true;
    $("action-error").textContent = "";
    try {
      const a = await api("POST", "/api/v1/alarms/" + encodeURIComponent(id) + "/" + kind, body);
      if (a.open) st.alarms.set(a.id, a); else st.alarms.delete(a.id);
      renderAlarms();
      await loadDetail(id);
    } catch (e) {
      $("action-error").textContent = visible(e.message);
    } finally {
      button.disabled = false;
    }
  }

  // -- start --------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      $("login-error").textContent = "";
      login($("login-token").value.trim());
    });
    $("logout").addEventListener("click", () => logout(""));
    $("sound").addEventListener("click", () => {
      sound = !sound;
      localStorage.setItem("firegate.sound", sound ? "on" : "off");
      $("sound").textContent = t(sound ? "sound_on" : "sound_off");
    });
    $("lang").addEventListener("click", () => {
      lang = lang === "zh" ? "en" : "zh";
      localStorage.setItem("firegate.lang", lang);
      applyLang();
    });
    $("detail-close").addEventListener("click", closeDetail);
    $("ack-btn").addEventListener("click", () => act("ack"));
    $("resolve-btn").addEventListener("click", () => act("resolve"));
    applyLang();
    window.addEventListener("hashchange", () => { if (st.me) openFromLink(); });
    const saved = sessionStorage.getItem("firegate.token");
    if (saved) login(saved);
  });
})();
