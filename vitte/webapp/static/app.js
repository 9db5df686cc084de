/* Vitte Web App: CharactersList, CharacterDetails, Settings, Memory, Premium.
 * Hand-written, no framework, no build step. Works with or without telegram-web-app.js:
 * tests inject window.Telegram.WebApp before this script runs; inside Telegram the script
 * is loaded from telegram.org, and if that fails the launch parameters in the URL hash are
 * used directly. Routes: #/  #/persona/<id>  #/settings  #/memory  #/premium
 */
(function () {
  "use strict";

  var TG_SCRIPT = "https://telegram.org/js/telegram-web-app.js?59";
  var INITIAL_HASH = location.hash;
  var REQUEST_TIMEOUT_MS = 15000;

  // ------------------------------------------------------------------ strings
  // The texts are the server's catalogues (vitte/locales), embedded in the page as JSON by
  // vitte/webapp/texts.py: {default, languages, catalogues: {<lang>: {texts, plurals}}}.
  var TEXTS = readTexts();
  var DEFAULT_LANG = TEXTS["default"];
  var LANGS = TEXTS.languages;

  function readTexts() {
    var data = null;
    try { data = JSON.parse(document.getElementById("vitte-texts").textContent); } catch (e) { data = null; }
    if (data && data.languages && data.languages.length && data.catalogues) return data;
    var lang = document.documentElement.lang;
    var empty = { "default": lang, languages: [lang], catalogues: {} };
    empty.catalogues[lang] = { texts: {}, plurals: {} };
    return empty;
  }

  function catalogue(lang) {
    return TEXTS.catalogues[lang] || TEXTS.catalogues[DEFAULT_LANG];
  }

  // the server's rule too (vitte.i18n.normalize_language): a language code's primary subtag if
  // there is a catalogue for it (en-US: en), else the default language
  function normalizeLang(code) {
    var primary = String(code || "").toLowerCase().replace(/_/g, "-").split("-")[0];
    return LANGS.indexOf(primary) >= 0 ? primary : DEFAULT_LANG;
  }

  var STYLES = ["short", "normal", "long"];
  var VOICE_MODES = ["never", "voice", "always"];  // the player's voice replies (issue 19)

  var state = {
    tg: null,
    initData: "",
    tgUser: null,
    lang: DEFAULT_LANG,
    me: null,
    authError: null, // the server rejected our initData: browse anonymously, show why
    personas: null,
    details: {},
    plans: null,
    busy: false,
    navigated: false,
    renderId: 0,
    retry: null
  };

  function fill(s, vars) {
    if (!vars) return s;
    return s.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] != null ? String(vars[k]) : m; });
  }

  function t(key, vars) {
    var table = catalogue(state.lang).texts;
    var fallback = catalogue(DEFAULT_LANG).texts;
    return fill(table[key] != null ? table[key] : fallback[key] != null ? fallback[key] : key, vars);
  }

  // a plural entry: the catalogue's form for the number's CLDR category (Intl.PluralRules)
  var pluralRules = {};
  function plural(key, n) {
    var forms = catalogue(state.lang).plurals[key] || {};
    var category = "other";
    try {
      var rules = pluralRules[state.lang] || (pluralRules[state.lang] = new Intl.PluralRules(state.lang));
      category = rules.select(n);
    } catch (e) { /* no Intl.PluralRules: "other" */ }
    var s = forms[category] != null ? forms[category] : forms.other != null ? forms.other : key;
    return fill(s, { n: n });
  }

  function storiesLabel(n) { return plural("stories", n); }

  // photos and voice replies bought for Stars and not spent yet (issue 19): "Куплено в запас:
  // 3 фото, 2 голосовых ответа"; null when there are none
  function boughtLabel(me) {
    var parts = [];
    if (me && me.extra_photos > 0) parts.push(plural("photos_count", me.extra_photos));
    if (me && me.extra_voice > 0) parts.push(plural("voice_count", me.extra_voice));
    return parts.length ? t("boughtLeft", { items: parts.join(", ") }) : null;
  }

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, props) {
    var el = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v == null || v === false) return;
        if (k === "class") el.className = v;
        else if (k === "text") el.textContent = v;
        else if (k === "style") Object.keys(v).forEach(function (sk) { el.style.setProperty(sk, v[sk]); });
        else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
        else if (v === true) el.setAttribute(k, "");
        else el.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child == null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  var ICONS = {
    gear: "M12 15.5a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7Zm7.4-2.5a7.6 7.6 0 0 0 0-2l2-1.6-2-3.4-2.4 1a7.4 7.4 0 0 0-1.7-1L15 3.5h-4l-.3 2.5a7.4 7.4 0 0 0-1.7 1l-2.4-1-2 3.4 2 1.6a7.6 7.6 0 0 0 0 2l-2 1.6 2 3.4 2.4-1c.5.4 1.1.8 1.7 1l.3 2.5h4l.3-2.5c.6-.2 1.2-.6 1.7-1l2.4 1 2-3.4-2-1.6Z",
    star: "M12 3.2l2.6 5.6 6.1.7-4.5 4.2 1.2 6-5.4-3.1-5.4 3.1 1.2-6L3.3 9.5l6.1-.7L12 3.2Z",
    back: "M15 5l-7 7 7 7",
    refresh: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
    check: "M5 12.5l4.5 4.5L19 7.5",
    chat: "M4 5.5h16v10H9l-5 4v-14Z",
    heart: "M12 20s-7.5-4.6-7.5-10A4.3 4.3 0 0 1 12 7.3 4.3 4.3 0 0 1 19.5 10c0 5.4-7.5 10-7.5 10Z",
    trash: "M5 7h14M10 7V5h4v2M7 7l1 12h8l1-12",
    download: "M12 4v11M7.5 10.5 12 15l4.5-4.5M5 19.5h14",
    wifi: "M3 9a14 14 0 0 1 18 0M6.5 12.5a9 9 0 0 1 11 0M10 16a4 4 0 0 1 4 0M12 19.5h.01",
    spark: "M12 3v4M12 17v4M3 12h4M17 12h4M6 6l2.5 2.5M15.5 15.5 18 18M6 18l2.5-2.5M15.5 8.5 18 6",
    memory: "M7 4h10v16l-5-3.5L7 20V4Z",
    pencil: "M4 20h4L19 9l-4-4L4 16v4ZM13.5 6.5l4 4"
  };

  function icon(name, cls) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "icon" + (cls ? " " + cls : ""));
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function gradient(colors, angle) {
    var c = colors && colors.length >= 2 ? colors : ["#ff8fb1", "#8e6cff"];
    return "linear-gradient(" + (angle || 155) + "deg, " + c[0] + ", " + c[1] + ")";
  }

  function avatar(p, cls) {
    var wrap = h("div", { class: cls, style: { "background-image": gradient(p.colors) } },
      h("span", { class: "monogram", text: (p.name || "?").slice(0, 1) }));
    var src = (cls === "hero-avatar" && p.portrait_url) || p.avatar_url;  // the large picture on details
    if (src) {
      var img = h("img", {
        src: src, alt: "", loading: "lazy", decoding: "async", width: "128", height: "128"
      });
      img.addEventListener("error", function () { img.remove(); });
      img.addEventListener("load", function () { wrap.classList.add("has-img"); });
      wrap.append(img);
    }
    return wrap;
  }

  function setView(node) {
    var view = document.getElementById("view");
    view.replaceChildren(node);
    view.scrollTop = 0;
    window.scrollTo(0, 0);
  }

  var toastTimer = null;
  function toast(text, kind) {
    var el = document.getElementById("toast");
    el.textContent = text;
    el.className = "toast" + (kind ? " toast-" + kind : "");
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 3200);
  }

  function showBanner(text, retry, kind) {
    var el = document.getElementById("banner");
    document.getElementById("banner-text").textContent = text;
    var btn = document.getElementById("banner-retry");
    btn.textContent = t("retry");
    btn.hidden = !retry;
    state.retry = retry || null;
    el.className = "banner" + (kind ? " banner-" + kind : "");
    el.hidden = false;
    document.body.classList.add("has-banner");
  }

  function hideBanner() {
    document.getElementById("banner").hidden = true;
    document.body.classList.remove("has-banner");
    state.retry = null;
  }

  // ------------------------------------------------------------------ Telegram
  function hashParams(raw) {
    var out = {};
    var s = (raw || "").replace(/^#/, "");
    var q = s.indexOf("?");
    if (q >= 0) s = s.slice(q + 1);
    if (s.indexOf("=") < 0) return out;
    s.split("&").forEach(function (part) {
      var i = part.indexOf("=");
      if (i <= 0) return;
      try { out[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1)); } catch (e) { /* skip */ }
    });
    return out;
  }

  function userFromInitData(initData) {
    try {
      var raw = new URLSearchParams(initData).get("user");
      return raw ? JSON.parse(raw) : null;
    } catch (e) { return null; }
  }

  // Without telegram-web-app.js: launch parameters from the hash, events posted as Telegram does.
  function fallbackWebApp(params) {
    function postEvent(type, data) {
      var payload = JSON.stringify({ eventType: type, eventData: data || {} });
      try {
        if (window.TelegramWebviewProxy) window.TelegramWebviewProxy.postEvent(type, JSON.stringify(data || {}));
        else if (window.external && "notify" in window.external) window.external.notify(payload);
        else if (window.parent !== window) window.parent.postMessage(payload, "*");
      } catch (e) { /* nothing to tell */ }
    }
    var theme = {};
    try { theme = JSON.parse(params.tgWebAppThemeParams || "{}") || {}; } catch (e) { theme = {}; }
    var initData = params.tgWebAppData || "";
    return {
      _fallback: true,
      initData: initData,
      initDataUnsafe: { user: userFromInitData(initData), start_param: params.tgWebAppStartParam },
      themeParams: theme,
      colorScheme: null,
      ready: function () { postEvent("web_app_ready"); },
      expand: function () { postEvent("web_app_expand"); },
      close: function () { postEvent("web_app_close"); }
    };
  }

  function loadTelegram() {
    return new Promise(function (resolve) {
      if (window.Telegram && window.Telegram.WebApp) { resolve(window.Telegram.WebApp); return; }
      var done = false;
      var finish = function () {
        if (done) return;
        done = true;
        resolve(window.Telegram && window.Telegram.WebApp ? window.Telegram.WebApp : null);
      };
      try {
        var s = document.createElement("script");
        s.src = TG_SCRIPT;
        s.async = true;
        s.onload = finish;
        s.onerror = finish;
        document.head.append(s);
      } catch (e) { finish(); }
      setTimeout(finish, 3500);
    });
  }

  function call(obj, name) {
    var args = Array.prototype.slice.call(arguments, 2);
    try {
      if (obj && typeof obj[name] === "function") return obj[name].apply(obj, args);
    } catch (e) { /* an unsupported method in an old client */ }
    return undefined;
  }

  function haptic(kind, value) {
    var hf = state.tg && state.tg.HapticFeedback;
    if (!hf) return;
    if (kind === "impact") call(hf, "impactOccurred", value || "light");
    else if (kind === "notify") call(hf, "notificationOccurred", value || "success");
    else call(hf, "selectionChanged");
  }

  function versionAtLeast(v) {
    var tg = state.tg;
    if (!tg || tg._fallback) return false;
    if (typeof tg.isVersionAtLeast !== "function") return true;
    try { return tg.isVersionAtLeast(v); } catch (e) { return false; }
  }

  function luminance(hex) {
    var m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
    if (!m) return null;
    var n = parseInt(m[1], 16);
    return (0.2126 * ((n >> 16) & 255) + 0.7152 * ((n >> 8) & 255) + 0.0722 * (n & 255)) / 255;
  }

  function applyTheme() {
    var root = document.documentElement;
    var tg = state.tg;
    var tp = (tg && tg.themeParams) || {};
    Object.keys(tp).forEach(function (k) {
      var v = tp[k];
      if (typeof v === "string" && /^#[0-9a-f]{3,8}$/i.test(v)) {
        root.style.setProperty("--tg-theme-" + k.replace(/_/g, "-"), v);
      }
    });
    var scheme = tg && tg.colorScheme;
    if (scheme !== "dark" && scheme !== "light") {
      var lum = luminance(tp.bg_color);
      if (lum != null) scheme = lum < 0.5 ? "dark" : "light";
      else scheme = window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
    }
    root.setAttribute("data-scheme", scheme);
    // the page's background is the theme's secondary_bg_color: let Telegram's header match it
    if (tg && versionAtLeast("6.1")) {
      call(tg, "setHeaderColor", "secondary_bg_color");
      call(tg, "setBackgroundColor", "secondary_bg_color");
    }
  }

  // ------------------------------------------------------------------ API
  function ApiError(status, code, message, body) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.body = body || {};
  }
  function NetError() { this.network = true; this.message = t("offline"); }

  function authHeader() {
    return state.initData && !state.authError ? "tma " + state.initData : null;
  }

  function api(path, opts) {
    opts = opts || {};
    var method = opts.method || "GET";
    var headers = { Accept: "application/json" };
    var auth = opts.auth === false ? null : authHeader();
    if (auth) headers.Authorization = auth;
    var url = path;
    if (!auth && method === "GET") url += (url.indexOf("?") < 0 ? "?" : "&") + "lang=" + encodeURIComponent(state.lang);
    var init = { method: method, headers: headers, cache: "no-store", credentials: "same-origin" };
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    var ctrl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = null;
    if (ctrl) {
      init.signal = ctrl.signal;
      timer = setTimeout(function () { ctrl.abort(); }, REQUEST_TIMEOUT_MS);
    }
    return fetch(url, init).then(function (resp) {
      clearTimeout(timer);
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (resp.ok) return data || {};
        var code = (data && data.code) || "http_" + resp.status;
        var msg = (data && data.error) || t("errorTitle");
        if (resp.status >= 502 && !data) throw new NetError();
        throw new ApiError(resp.status, code, msg, data);
      });
    }, function () {
      clearTimeout(timer);
      throw new NetError();
    }).then(null, function (err) {
      // initData rejected on a read: tell the player once, keep browsing anonymously
      if (err instanceof ApiError && err.status === 401 && auth && method === "GET") {
        state.authError = err.message;
        showBanner(err.message, null, "auth");
        if (opts.retryAnonymously !== false) return api(path, opts);
      }
      throw err;
    });
  }

  function loadMe() {
    if (!state.initData || state.authError) return Promise.resolve(null);
    return api("api/me", { retryAnonymously: false }).then(function (me) {
      if (state.authError) return null;
      state.me = me;
      if (me && LANGS.indexOf(me.language) >= 0) setLang(me.language);
      sendBrowserZone();
      return me;
    }, function (err) {
      if (err instanceof ApiError && err.status === 401) return null; // the banner says why
      throw err;
    });
  }

  // the browser's time zone (Intl), once per session, for the persona's quiet hours (issue 18);
  // the server keeps it only until the player chooses one in Settings
  function browserZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return ""; }
  }

  function sendBrowserZone() {
    var zone = browserZone();
    if (state.zoneSent || !zone) return;
    state.zoneSent = true;
    state.zoneSending = api("api/me/nudges", { method: "POST", body: { timezone: zone, browser: true } }).then(function (prefs) {
      state.nudges = prefs;
    }, function () { state.zoneSent = false; });
  }

  function zoneNames(current) {
    var names = [];
    try { if (Intl.supportedValuesOf) names = Intl.supportedValuesOf("timeZone").slice(); } catch (e) { names = []; }
    [current, browserZone(), "UTC", "Europe/Moscow"].forEach(function (z) { if (z && names.indexOf(z) < 0) names.push(z); });
    names.sort();
    return names;
  }

  // "Пусть персонаж пишет первым" and the time zone: a section filled once its prefs arrive
  function nudgesSection() {
    var box = h("section", { class: "section", "data-test": "nudges" });
    function fill(prefs) {
      state.nudges = prefs;
      while (box.firstChild) box.removeChild(box.firstChild);
      if (!prefs || !prefs.available) return;
      var on = !!prefs.nudges;
      var toggle = h("button", {
        type: "button", role: "switch", "aria-checked": on ? "true" : "false",
        class: "row" + (on ? " is-on" : ""), "data-test": "nudges-toggle",
        onclick: function (e) { save({ nudges: !on }, e.currentTarget); }
      },
        h("span", { class: "row-text" }, h("span", { class: "row-title", text: t("nudges") })),
        h("span", { class: "row-check" }, on ? icon("check") : null));
      var select = h("select", { class: "row", "data-test": "timezone", "aria-label": t("timezone"),
        onchange: function (e) { save({ timezone: e.currentTarget.value }, e.currentTarget); } },
        zoneNames(prefs.timezone).map(function (z) {
          var o = h("option", { value: z, text: z });
          if (z === prefs.timezone) o.selected = true;
          return o;
        }));
      box.appendChild(h("h2", { class: "section-title", text: t("nudges") }));
      box.appendChild(h("div", { class: "card list" }, toggle,
        h("label", { class: "row" }, h("span", { class: "row-text" },
          h("span", { class: "row-title", text: t("timezone") }),
          h("span", { class: "row-hint", text: t("timezoneHint") })), select)));
    }
    function save(patch, control) {
      // another request is in flight: show what is stored again rather than a choice not sent
      if (state.busy) { fill(state.nudges); return; }
      state.busy = true;
      control.classList.add("is-saving");
      haptic("select");
      api("api/me/nudges", { method: "POST", body: patch }).then(function (prefs) {
        state.busy = false;
        toast(t("saved"), "ok");
        fill(prefs);
      }, function (err) {
        state.busy = false;
        control.classList.remove("is-saving");
        if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
        else toast((err && err.message) || t("errorTitle"), "error");
      });
    }
    if (state.nudges) fill(state.nudges);
    // after the browser's zone has been sent (the settings page then shows it)
    (state.zoneSending || Promise.resolve()).then(function () {
      return api("api/me/nudges").then(fill, function () { /* the section stays empty */ });
    });
    return box;
  }

  function setLang(lang) {
    if (LANGS.indexOf(lang) < 0 || lang === state.lang) return;
    state.lang = lang;
    state.personas = null;
    state.details = {};
    state.plans = null;
    document.documentElement.lang = lang;
  }

  // ------------------------------------------------------------------ confirm / close
  function confirmDialog(text) {
    return new Promise(function (resolve) {
      var tg = state.tg;
      if (tg && typeof tg.showConfirm === "function" && versionAtLeast("6.2")) {
        try { tg.showConfirm(text, function (ok) { resolve(!!ok); }); return; } catch (e) { /* fall through */ }
      }
      resolve(window.confirm(text));
    });
  }

  function closeApp() {
    if (state.tg && typeof state.tg.close === "function") {
      call(state.tg, "close");
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ router
  function parseRoute(hash) {
    var s = (hash || "").replace(/^#/, "");
    var q = s.indexOf("?");
    if (q >= 0) s = s.slice(0, q);
    if (s.charAt(0) !== "/") return { name: "list" };
    var parts = s.split("/").filter(Boolean).map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    if (parts.length === 0) return { name: "list" };
    if (parts[0] === "persona" && parts.length === 2) return { name: "persona", id: parts[1] };
    if (parts[0] === "settings" && parts.length === 1) return { name: "settings" };
    if (parts[0] === "memory" && parts.length === 1) return { name: "memory" };
    if (parts[0] === "premium" && parts.length === 1) return { name: "premium" };
    return { name: "notfound" };
  }

  function go(hash) {
    state.navigated = true;
    haptic("impact", "light");
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function goBack() {
    if (state.navigated && history.length > 1) history.back();
    else location.hash = "#/";
  }

  function startRoute() {
    var params = hashParams(INITIAL_HASH);
    var route = parseRoute(INITIAL_HASH);
    var target = null;
    if (params.tgWebAppData) {
      var s = INITIAL_HASH.replace(/^#/, "");
      var q = s.indexOf("?");
      target = q > 0 && s.charAt(0) === "/" ? "#" + s.slice(0, q) : "#/";
    }
    var start = state.tg && state.tg.initDataUnsafe && state.tg.initDataUnsafe.start_param;
    if (route.name === "list" && typeof start === "string") {
      var m = /^persona[-_]([a-z0-9-]{1,64})$/i.exec(start);
      if (m) target = "#/persona/" + m[1];
      else if (start === "settings" || start === "premium" || start === "memory") target = "#/" + start;
    }
    if (target) {
      try { history.replaceState(null, "", location.pathname + location.search + target); }
      catch (e) { location.hash = target; }
    }
  }

  function updateBackButton(route) {
    var bb = state.tg && state.tg.BackButton;
    var native = !!bb && versionAtLeast("6.1");
    document.documentElement.classList.toggle("native-back", native);
    if (!native) return;
    if (route.name === "list") call(bb, "hide");
    else call(bb, "show");
  }

  function render() {
    var route = parseRoute(location.hash);
    var id = ++state.renderId;
    updateBackButton(route);
    var p;
    if (route.name === "list") p = renderList(id);
    else if (route.name === "persona") p = renderPersona(id, route.id);
    else if (route.name === "settings") p = renderSettings(id);
    else if (route.name === "memory") p = renderMemory(id);
    else if (route.name === "premium") p = renderPremium(id);
    else p = Promise.resolve(setView(emptyState("🧭", t("notFoundTitle"), "", t("backToList"), function () { go("#/"); })));
    return p.then(null, function (err) { if (id === state.renderId) showFailure(err, render); });
  }

  function current(id) { return id === state.renderId; }

  function showFailure(err, retry) {
    if (err && err.network) {
      showBanner(t("offline"), function () { hideBanner(); retry(); }, "offline");
      // nothing cached to show: say it in the page too, not only in the banner
      if (document.querySelector("#view .sk")) {
        setView(emptyState("📡", t("offlineTitle"), t("offlineLead"), t("retry"), function () { hideBanner(); retry(); }));
      }
      return;
    }
    if (err instanceof ApiError && err.status === 404) {
      setView(emptyState("💔", t("personaMissing"), err.message, t("backToList"), function () { go("#/"); }));
      return;
    }
    var msg = (err && err.message) || t("errorTitle");
    setView(emptyState("⚠️", t("errorTitle"), msg, t("retry"), function () { retry(); }));
  }

  // ------------------------------------------------------------------ pieces
  function topBar(title, opts) {
    opts = opts || {};
    return h("header", { class: "topbar" },
      h("button", { type: "button", class: "icon-btn back-btn", "aria-label": t("back"), onclick: goBack }, icon("back")),
      h("h1", { class: "topbar-title", text: title }),
      opts.right || h("span", { class: "topbar-spacer" }));
  }

  function emptyState(emoji, title, text, action, onAction) {
    return h("div", { class: "page" },
      h("div", { class: "empty" },
        h("div", { class: "empty-emoji", text: emoji }),
        h("h2", { text: title }),
        text ? h("p", { text: text }) : null,
        action ? h("button", { type: "button", class: "btn btn-primary", onclick: onAction, text: action }) : null));
  }

  function chips(tags, limit, cls) {
    if (!tags || !tags.length) return null;
    return h("div", { class: "chips" + (cls ? " " + cls : "") }, tags.slice(0, limit || 3).map(function (tag) {
      return h("span", { class: "chip", text: tag });
    }));
  }

  function skeletonList() {
    var cards = [];
    for (var i = 0; i < 4; i++) cards.push(h("div", { class: "pcard sk" }));
    return h("div", { class: "page" },
      h("div", { class: "list-head" }, h("div", { class: "sk sk-title" }), h("div", { class: "sk sk-line" })),
      h("div", { class: "grid" }, cards));
  }

  function skeletonDetails() {
    return h("div", { class: "page page-details" },
      h("div", { class: "hero sk-hero" }, h("div", { class: "hero-avatar sk" })),
      h("div", { class: "section" }, h("div", { class: "sk sk-line" }), h("div", { class: "sk sk-line" }), h("div", { class: "sk sk-line short" })));
  }

  // ------------------------------------------------------------------ CharactersList
  function renderList(id) {
    if (!state.personas) setView(skeletonList());
    else setView(listView(state.personas));
    return Promise.all([api("api/personas"), loadMe()]).then(function (res) {
      if (!current(id)) return;
      var data = res[0];
      if (data.language) setLang(data.language);
      state.personas = data;
      hideOfflineBanner();
      setView(listView(data));
    });
  }

  function hideOfflineBanner() {
    var el = document.getElementById("banner");
    if (!el.hidden && el.classList.contains("banner-offline")) hideBanner();
  }

  function listView(data) {
    var personas = data.personas || [];
    var me = state.me;
    var common = {};
    if (personas.length > 2) {
      personas[0].tags.forEach(function (tag) {
        if (personas.every(function (p) { return p.tags.indexOf(tag) >= 0; })) common[tag] = true;
      });
    }
    var head = h("div", { class: "list-head" },
      h("div", { class: "brand-row" },
        h("div", { class: "brand" }, icon("heart", "brand-heart"), h("span", { text: "Vitte" })),
        h("div", { class: "head-actions" },
          h("button", { type: "button", class: "icon-btn", "aria-label": t("memory"), "data-test": "to-memory", onclick: function () { go("#/memory"); } }, icon("memory")),
          h("button", { type: "button", class: "icon-btn", "aria-label": t("premium"), "data-test": "to-premium", onclick: function () { go("#/premium"); } }, icon("star")),
          h("button", { type: "button", class: "icon-btn", "aria-label": t("settings"), "data-test": "to-settings", onclick: function () { go("#/settings"); } }, icon("gear")))),
      h("h1", { class: "list-title", text: t("listTitle") }),
      h("p", { class: "lead", text: t("listLead") }));

    var nowCard = null;
    if (me && me.dialog_id && me.persona_id) {
      var cp = personas.filter(function (p) { return p.id === me.persona_id; })[0];
      nowCard = h("div", { class: "now-card", role: "button", tabindex: "0", onclick: function () { go("#/persona/" + encodeURIComponent(me.persona_id)); } },
        cp ? avatar(cp, "now-avatar") : null,
        h("div", { class: "now-text" },
          h("span", { class: "now-label", text: t("nowTalking") }),
          h("strong", { text: me.persona_name || (cp && cp.name) || "" }),
          me.story_title ? h("span", { class: "now-story", text: me.story_title }) : null),
        state.tg && !state.tg._fallback && typeof state.tg.close === "function"
          ? h("button", { type: "button", class: "btn btn-tinted btn-small", onclick: function (e) { e.stopPropagation(); closeApp(); } }, icon("chat"), t("backToChat"))
          : null);
    }

    if (!personas.length) {
      return h("div", { class: "page" }, head, h("div", { class: "empty" },
        h("div", { class: "empty-emoji", text: "✨" }), h("h2", { text: t("empty") }), h("p", { text: t("emptyLead") })));
    }

    var grid = h("div", { class: "grid" }, personas.map(function (p, i) {
      var tags = p.tags.filter(function (tag) { return !common[tag]; });
      var glow = p.colors && p.colors[1] ? p.colors[1] : "#b98bd6";
      var art = avatar(p, "pcard-art");
      art.style.setProperty("background-image", gradient(p.colors, 180));
      art.append(
        p.current ? h("span", { class: "badge badge-current" }, h("i", { class: "dot" }), t("current")) : null,
        p.current ? null : h("span", { class: "badge badge-count", text: storiesLabel(p.story_count) }));
      return h("a", {
        class: "pcard" + (p.current ? " is-current" : ""),
        href: "#/persona/" + encodeURIComponent(p.id),
        "data-persona": p.id,
        style: { "--glow": glow, "--i": String(i) },
        onclick: function (e) { e.preventDefault(); go("#/persona/" + encodeURIComponent(p.id)); }
      },
        art,
        h("div", { class: "pcard-body" },
          h("h2", { class: "pcard-name", text: p.name }),
          h("p", { class: "pcard-tagline", text: p.tagline }),
          chips(tags, 2, "chips-soft")));
    }));
    return h("div", { class: "page" }, head, nowCard, grid);
  }

  // ------------------------------------------------------------------ CharacterDetails
  function renderPersona(id, personaId) {
    var cached = state.details[personaId];
    setView(cached ? detailsView(cached) : skeletonDetails());
    var me = state.me ? Promise.resolve(state.me) : loadMe();
    return Promise.all([api("api/personas/" + encodeURIComponent(personaId)), me]).then(function (res) {
      if (!current(id)) return;
      var data = res[0];
      if (data.language) setLang(data.language);
      state.details[personaId] = data;
      hideOfflineBanner();
      setView(detailsView(data));
    });
  }

  function detailsView(p) {
    var hero = h("div", { class: "hero", style: { "background-image": gradient(p.colors, 160) } },
      h("button", { type: "button", class: "icon-btn hero-back back-btn", "aria-label": t("back"), onclick: goBack }, icon("back")),
      h("div", { class: "hero-glow" }),
      avatar(p, "hero-avatar"),
      h("h1", { class: "hero-name", text: p.name }),
      h("p", { class: "hero-tagline", text: p.tagline }),
      p.current ? h("span", { class: "badge badge-hero" }, h("i", { class: "dot" }), t("current")) : null,
      chips(p.tags, 5));

    var about = h("section", { class: "section" },
      h("h2", { class: "section-title", text: t("about") }),
      h("div", { class: "card prose" }, (p.description || "").split(/\n+/).filter(Boolean).map(function (para) {
        return h("p", { text: para });
      })));

    var stories = h("section", { class: "section" },
      h("h2", { class: "section-title", text: t("storiesTitle") }),
      (p.stories || []).map(function (s, i) { return storyCard(p, s, i); }));

    return h("div", { class: "page page-details" }, hero, about, stories);
  }

  function storyCard(p, s, i) {
    var isCurrent = !!s.current;
    var btn = h("button", {
      type: "button",
      class: "btn btn-block " + (isCurrent ? "btn-tinted" : "btn-primary"),
      "data-story": s.id
    }, isCurrent ? icon("refresh") : null, h("span", { text: isCurrent ? t("refresh") : t("start") }));
    btn.addEventListener("click", function () { startStory(p, s, btn); });
    return h("article", { class: "story card" + (isCurrent ? " is-current" : ""), "data-story-card": s.id },
      h("div", { class: "story-head" },
        h("span", { class: "story-num", style: { "background-image": gradient(p.colors, 135) }, text: String(i + 1) }),
        h("div", { class: "story-heading" },
          isCurrent ? h("span", { class: "badge badge-soft", text: t("currentStory") }) : null,
          h("h3", { class: "story-title", text: s.title }))),
      h("p", { class: "story-premise", text: s.premise }),
      btn);
  }

  function startStory(p, s, btn) {
    if (state.busy) return;
    if (!state.initData) { toast(t("openInTelegram"), "warn"); return; }
    if (state.authError) { toast(state.authError, "error"); return; }
    var restart = !!s.current;
    var me = state.me;
    var ask = null;
    if (restart) ask = t("confirmRestart");
    else if (me && me.dialog_id && (me.persona_id !== p.id || me.story_id !== s.id)) {
      ask = t("confirmSwitch", { name: me.persona_name || "" });
    }
    state.busy = true;
    btn.disabled = true;
    var release = function () { state.busy = false; btn.disabled = false; btn.classList.remove("is-loading"); };
    var gate = me && me.adult_confirmed === false ? ageGate() : Promise.resolve(true);
    gate.then(function (adult) {
      if (!adult) return false;
      return ask ? confirmDialog(ask) : true;
    }).then(function (ok) {
      if (!ok) { release(); return null; }
      btn.classList.add("is-loading");
      haptic("impact", "medium");
      var body = { persona_id: p.id, story_id: s.id };
      if (restart) { body.restart = true; if (p.dialog_id) body.dialog_id = p.dialog_id; }
      var post = function () { return api("api/dialogs", { method: "POST", body: body }); };
      return post().then(null, function (err) {
        // the page did not know yet: ask now, then try once more
        if (err instanceof ApiError && err.code === "age_unconfirmed") {
          return ageGate().then(function (adult) {
            if (!adult) { release(); return null; }
            return post();
          });
        }
        throw err;
      }).then(function (res) {
        if (!res) return null;
        haptic("notify", "success");
        state.me = null;
        state.personas = null;
        delete state.details[p.id];
        btn.classList.remove("is-loading");
        btn.classList.add("is-done");
        btn.replaceChildren(icon("check"), h("span", { text: t("sent") }));
        toast(t("sent"), "ok");
        setTimeout(function () {
          if (!closeApp()) { state.busy = false; render(); }
        }, 450);
        return res;
      });
    }).then(null, function (err) {
      release();
      haptic("notify", "error");
      if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
      else toast((err && err.message) || t("errorTitle"), "error");
      if (err instanceof ApiError && (err.code === "stale_dialog" || err.status === 404)) {
        delete state.details[p.id];
        state.me = null;
        render();
      }
    });
  }

  // ------------------------------------------------------------------ the age gate (18+)
  function sheet(build) {
    var backdrop = h("div", { class: "sheet-backdrop" });
    var panel = h("div", { class: "sheet", role: "dialog", "aria-modal": "true" });
    backdrop.append(panel);
    document.body.append(backdrop);
    var close = function () {
      backdrop.classList.add("is-closing");
      setTimeout(function () { backdrop.remove(); }, 180);
    };
    build(panel, close);
    return close;
  }

  // resolves true once the player confirmed being 18+ (stored by the server), false otherwise
  function ageGate() {
    return new Promise(function (resolve) {
      sheet(function (panel, close) {
        var yes = h("button", { type: "button", class: "btn btn-primary btn-block", "data-age": "yes", text: t("ageYes") });
        var no = h("button", { type: "button", class: "btn btn-plain btn-block", "data-age": "no", text: t("ageNo") });
        panel.append(
          h("div", { class: "sheet-badge", text: "18+" }),
          h("h2", { class: "sheet-title", text: t("ageTitle") }),
          h("p", { class: "sheet-text", text: t("ageText") }),
          yes, no);
        var answer = function (adult) {
          yes.disabled = true;
          no.disabled = true;
          api("api/me/adult", { method: "POST", body: { adult: adult } }).then(function (me) {
            state.me = me;
            if (adult) { close(); resolve(true); return; }
            panel.replaceChildren(
              h("div", { class: "sheet-badge", text: "18+" }),
              h("p", { class: "sheet-text", text: t("ageDeclined") }),
              h("button", { type: "button", class: "btn btn-tinted btn-block", text: t("ok"), onclick: function () { close(); } }));
            resolve(false);
          }, function (err) {
            close();
            resolve(false);
            if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
            else toast((err && err.message) || t("errorTitle"), "error");
          });
        };
        yes.addEventListener("click", function () { haptic("impact", "medium"); answer(true); });
        no.addEventListener("click", function () { answer(false); });
      });
    });
  }

  // ------------------------------------------------------------------ Settings
  function renderSettings(id) {
    if (!state.initData || state.authError) {
      setView(h("div", { class: "page" }, topBar(t("settings")),
        h("div", { class: "card notice" }, state.authError || t("settingsNeedTelegram"))));
      return Promise.resolve();
    }
    var shown = state.me;
    if (shown) setView(settingsView(shown));
    else setView(h("div", { class: "page" }, topBar(t("settings")), h("div", { class: "card sk sk-block" })));
    return loadMe().then(function (me) {
      if (!current(id)) return;
      hideOfflineBanner();
      // nothing new: the page stays as it is (with what the player began typing into it)
      if (me && shown && JSON.stringify(me) === JSON.stringify(shown)) return;
      setView(me ? settingsView(me) : h("div", { class: "page" }, topBar(t("settings")),
        h("div", { class: "card notice" }, state.authError || t("settingsNeedTelegram"))));
    });
  }

  function saveSetting(patch, control) {
    if (state.busy) return;
    state.busy = true;
    control.classList.add("is-saving");
    haptic("select");
    api("api/settings", { method: "POST", body: patch }).then(function (me) {
      state.busy = false;
      var langChanged = me.language !== state.lang;
      state.me = me;
      // a new name: the persona texts read ({{user}}) are fetched again
      if ("name" in patch) { state.personas = null; state.details = {}; }
      setLang(me.language);
      if (langChanged) state.me = me;
      toast(t("saved"), "ok");
      setView(settingsView(me));
    }, function (err) {
      state.busy = false;
      control.classList.remove("is-saving");
      if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
      else toast((err && err.message) || t("errorTitle"), "error");
    });
  }

  function settingsView(me) {
    var langSeg = h("div", { class: "segmented", role: "radiogroup", "aria-label": t("language") },
      LANGS.map(function (lang) {
        var on = me.language === lang;
        return h("button", {
          type: "button", role: "radio", "aria-checked": on ? "true" : "false",
          class: "seg" + (on ? " is-on" : ""), "data-lang": lang,
          onclick: function (e) { if (!on) saveSetting({ language: lang }, e.currentTarget); }
        }, t("lang_" + lang));
      }));

    var styleList = h("div", { class: "card list", role: "radiogroup", "aria-label": t("style") },
      STYLES.map(function (style) {
        var on = me.style === style;
        return h("button", {
          type: "button", role: "radio", "aria-checked": on ? "true" : "false",
          class: "row" + (on ? " is-on" : ""), "data-style": style,
          onclick: function (e) { if (!on) saveSetting({ style: style }, e.currentTarget); }
        },
          h("span", { class: "row-text" },
            h("span", { class: "row-title", text: t("style_" + style) }),
            h("span", { class: "row-hint", text: t("style_" + style + "_hint") })),
          h("span", { class: "row-check" }, on ? icon("check") : null));
      }));

    // "Голосом отвечать: никогда / на голосовые / всегда" (only when the bot can speak)
    var voiceList = me.voice_available ? h("div", { class: "card list", role: "radiogroup", "aria-label": t("voiceReplies") },
      VOICE_MODES.map(function (mode) {
        var on = (me.voice_replies || "never") === mode;
        return h("button", {
          type: "button", role: "radio", "aria-checked": on ? "true" : "false",
          class: "row" + (on ? " is-on" : ""), "data-voice": mode,
          onclick: function (e) { if (!on) saveSetting({ voice_replies: mode }, e.currentTarget); }
        },
          h("span", { class: "row-text" }, h("span", { class: "row-title", text: t("voice_" + mode) })),
          h("span", { class: "row-check" }, on ? icon("check") : null));
      })) : null;

    // "Как к вам обращаться": {{user}} in the persona's texts; empty: the Telegram first name
    var nameInput = h("input", {
      type: "text", class: "fact-input", "data-test": "call-me", maxlength: "40", autocomplete: "off",
      "aria-label": t("callMe"), placeholder: me.first_name || "", value: me.name || "",
      onkeydown: function (e) { if (e.key === "Enter") e.currentTarget.blur(); },
      onchange: function (e) {
        var value = e.currentTarget.value.trim();
        if (value !== (me.name || "")) saveSetting({ name: value }, e.currentTarget);
      }
    });
    var nameRow = h("div", { class: "card list" }, h("label", { class: "row" },
      h("span", { class: "row-text" },
        nameInput,
        h("span", { class: "row-hint", text: t("callMeHint") }))));

    var exp = h("button", { type: "button", class: "row", "data-test": "export-data", onclick: exportData },
      h("span", { class: "row-icon" }, icon("download")),
      h("span", { class: "row-text" },
        h("span", { class: "row-title", text: t("exportData") }),
        h("span", { class: "row-hint", text: t("exportHint") })));

    var del = h("button", { type: "button", class: "row row-danger", "data-test": "delete-data", onclick: deleteData },
      h("span", { class: "row-icon" }, icon("trash")),
      h("span", { class: "row-text" },
        h("span", { class: "row-title", text: t("deleteData") }),
        h("span", { class: "row-hint", text: t("deleteHint") })));

    return h("div", { class: "page" }, topBar(t("settings")),
      h("section", { class: "section" }, h("h2", { class: "section-title", text: t("callMe") }), nameRow),
      h("section", { class: "section" }, h("h2", { class: "section-title", text: t("language") }), langSeg),
      h("section", { class: "section" }, h("h2", { class: "section-title", text: t("style") }), styleList),
      voiceList ? h("section", { class: "section" }, h("h2", { class: "section-title", text: t("voiceReplies") }), voiceList) : null,
      nudgesSection(),
      h("section", { class: "section" }, h("h2", { class: "section-title", text: t("data") }), h("div", { class: "card list" }, exp, del)));
  }

  // a Web App inside Telegram cannot reliably download a file: the bot sends it into the chat
  function exportData() {
    if (state.busy) return;
    state.busy = true;
    haptic("impact", "light");
    api("api/me/export", { method: "POST", body: {} }).then(function () {
      state.busy = false;
      haptic("notify", "success");
      toast(t("exportSent"), "ok");
    }, function (err) {
      state.busy = false;
      if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
      else toast((err && err.message) || t("errorTitle"), "error");
    });
  }

  function deleteData() {
    if (state.busy) return;
    state.busy = true;
    confirmDialog(t("confirmDelete")).then(function (ok) {
      if (!ok) { state.busy = false; return null; }
      return api("api/me/delete", { method: "POST", body: { confirm: true } }).then(function () {
        state.busy = false;
        state.me = null;
        state.personas = null;
        state.details = {};
        haptic("notify", "success");
        toast(t("deleted"), "ok");
        return loadMe().then(function (me) { if (me) setView(settingsView(me)); });
      });
    }).then(null, function (err) {
      state.busy = false;
      if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
      else toast((err && err.message) || t("errorTitle"), "error");
    });
  }

  // ------------------------------------------------------------------ Memory
  // what the persona remembers: the facts (edit, forget, add "запомни: …") and the summary, read-only
  function renderMemory(id) {
    if (!state.initData || state.authError) {
      setView(h("div", { class: "page" }, topBar(t("memory")),
        h("div", { class: "card notice" }, state.authError || t("memoryNeedTelegram"))));
      return Promise.resolve();
    }
    setView(h("div", { class: "page" }, topBar(t("memory")), h("div", { class: "card sk sk-block" })));
    return api("api/me/memory").then(function (mem) {
      if (!current(id)) return;
      hideOfflineBanner();
      setView(memoryView(mem));
    }, function (err) {
      if (!(err instanceof ApiError && err.status === 401)) throw err;
      if (current(id)) {  // Telegram did not vouch for this initData: no one's memory is shown
        setView(h("div", { class: "page" }, topBar(t("memory")),
          h("div", { class: "card notice" }, state.authError || err.message)));
      }
    });
  }

  function memoryFailed(err) {
    state.busy = false;
    if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
    else toast((err && err.message) || t("errorTitle"), "error");
  }

  function memoryReload(message) {
    return api("api/me/memory").then(function (mem) {
      state.busy = false;
      haptic("notify", "success");
      if (message) toast(message, "ok");
      if (parseRoute(location.hash).name === "memory") setView(memoryView(mem));
    });
  }

  function factRow(f, max) {
    var row = h("div", { class: "row fact", "data-test": "fact", "data-id": String(f.id) });
    function show() {
      row.replaceChildren(
        h("span", { class: "row-text" },
          h("span", { class: "row-title fact-text", text: f.text }),
          f.origin === "player" ? h("span", { class: "row-hint", text: t("memoryByYou") }) : null),
        h("span", { class: "fact-actions" },
          h("button", { type: "button", class: "icon-btn", "aria-label": t("memoryEdit"), "data-test": "fact-edit", onclick: edit }, icon("pencil")),
          h("button", { type: "button", class: "btn btn-plain btn-small", "data-test": "fact-forget", onclick: forget, text: t("memoryForget") })));
    }
    function edit() {
      var input = h("textarea", { class: "fact-input", maxlength: String(max), rows: "2", "data-test": "fact-input" });
      input.value = f.text;
      row.replaceChildren(h("div", { class: "fact-edit" }, input,
        h("div", { class: "fact-buttons" },
          h("button", { type: "button", class: "btn btn-plain btn-small", "data-test": "fact-cancel", onclick: show, text: t("memoryCancel") }),
          h("button", { type: "button", class: "btn btn-primary btn-small", "data-test": "fact-save", onclick: save, text: t("memorySave") }))));
      input.focus();
      function save() {
        if (state.busy) return;
        state.busy = true;
        api("api/me/memory/" + f.id, { method: "PATCH", body: { text: input.value } }).then(function () {
          return memoryReload(t("memorySaved"));
        }).then(null, memoryFailed);
      }
    }
    function forget() {
      if (state.busy) return;
      state.busy = true;
      haptic("impact", "light");
      api("api/me/memory/" + f.id, { method: "DELETE" }).then(function () {
        return memoryReload(t("memoryForgotten"));
      }).then(null, memoryFailed);
    }
    show();
    return row;
  }

  function memoryView(mem) {
    if (!mem.dialog_id) {
      return h("div", { class: "page" }, topBar(t("memory")),
        h("div", { class: "card notice", "data-test": "memory-no-dialog" }, t("memoryNoDialog")));
    }
    var max = mem.max_chars || 300;
    var input = h("input", { type: "text", class: "fact-input", maxlength: String(max + 12), placeholder: t("memoryAddPlaceholder"), "data-test": "fact-new" });
    function add(e) {
      if (e) e.preventDefault();
      if (state.busy || !input.value.trim()) return;
      state.busy = true;
      api("api/me/memory", { method: "POST", body: { text: input.value } }).then(function () {
        return memoryReload(t("memorySaved"));
      }).then(null, memoryFailed);
    }
    var form = h("form", { class: "fact-add", onsubmit: add }, input,
      h("button", { type: "submit", class: "btn btn-primary btn-small", "data-test": "fact-add", text: t("memoryAdd") }));
    var facts = mem.facts && mem.facts.length
      ? h("div", { class: "card list", "data-test": "facts" }, mem.facts.map(function (f) { return factRow(f, max); }))
      : h("div", { class: "card notice", "data-test": "facts-empty" }, t("memoryEmpty"));
    return h("div", { class: "page" }, topBar(t("memory")),
      h("section", { class: "section" },
        h("h2", { class: "section-title", text: t("memoryIntro", { persona: mem.persona || "" }) }), form, facts),
      h("section", { class: "section" },
        h("h2", { class: "section-title", text: t("memorySummary") }),
        h("div", { class: "card summary", "data-test": "summary", text: mem.summary || t("memorySummaryEmpty") })));
  }

  // ------------------------------------------------------------------ Premium
  function formatDate(iso) {
    try {
      return new Intl.DateTimeFormat(t("date_locale"), { day: "numeric", month: "long", year: "numeric" })
        .format(new Date(iso));
    } catch (e) { return iso.slice(0, 10); }
  }

  function renderPremium(id) {
    if (state.plans) setView(premiumView(state.plans, state.me));
    else setView(h("div", { class: "page" }, topBar(t("premium")), h("div", { class: "card sk sk-block" })));
    return Promise.all([api("api/plans"), state.me ? Promise.resolve(state.me) : loadMe()]).then(function (res) {
      if (!current(id)) return;
      state.plans = res[0];
      hideOfflineBanner();
      setView(premiumView(res[0], state.me));
    });
  }

  function premiumView(data, me) {
    var plans = (data.plans || []).concat(data.items || []);  // items: one photo / voice reply for Stars
    var currentPlan = (me && me.plan) || data.current_plan || null;
    var hero = h("div", { class: "premium-hero" },
      h("div", { class: "premium-orb" }, icon("star")),
      h("h1", { text: t("premiumTitle") }),
      h("p", { text: t("premiumLead") }));

    var status = null;
    if (me) {
      var premium = me.plan === "premium";
      var bought = boughtLabel(me);
      status = h("div", { class: "card plan-status" + (premium ? " is-premium" : "") },
        h("span", { class: "plan-status-label", text: t("yourPlan") }),
        h("strong", { class: "plan-status-name", text: me.plan_title || "" }),
        h("span", { class: "plan-status-hint", text: premium && me.premium_until
          ? t(me.renews ? "renewsOn" : "activeUntil", { date: formatDate(me.premium_until) })
          : t("freeForever") }),
        typeof me.left_today === "number" ? h("span", { class: "plan-status-quota", text: t("leftToday", { n: me.left_today }) }) : null,
        bought ? h("span", { class: "plan-status-quota plan-status-bought", text: bought }) : null);
    }

    var cards = plans.map(function (plan) {
      var paid = plan.price_stars > 0;
      var subscription = plan.kind ? plan.kind === "subscription" : plan.period_days > 0;
      var mine = currentPlan === plan.id;
      var buy = null;
      if (paid && !(me && me.plan === plan.id && subscription)) {
        buy = h("button", { type: "button", class: "btn btn-block " + (subscription ? "btn-premium" : "btn-tinted"), "data-plan": plan.id },
          h("span", { text: t(subscription ? "buy" : "buyPack", { price: plan.price_stars }) }));
        buy.addEventListener("click", function () { buyPlan(plan, buy); });
      }
      var price = !paid ? t("free") : subscription
        ? t("price", { price: plan.price_stars, days: plan.period_days }) : t("pricePack", { price: plan.price_stars });
      return h("article", { class: "card plan" + (subscription && paid ? " plan-premium" : "") + (mine ? " is-mine" : ""), "data-plan-card": plan.id },
        h("div", { class: "plan-head" },
          h("h2", { class: "plan-title", text: plan.title }),
          h("span", { class: "plan-price", text: price })),
        mine ? h("span", { class: "badge badge-soft", text: t("youHave") }) : null,
        h("ul", { class: "perks" }, plan.perks.map(function (perk) {
          return h("li", null, icon("check"), h("span", { text: perk }));
        })),
        buy);
    });

    return h("div", { class: "page page-premium" }, topBar(t("premium")), hero, status, cards);
  }

  function buyPlan(plan, btn) {
    if (state.busy) return;
    if (!state.initData || state.authError) { toast(state.authError || t("openInTelegram"), "warn"); return; }
    state.busy = true;
    btn.disabled = true;
    btn.classList.add("is-loading");
    api("api/invoice", { method: "POST", body: { plan_id: plan.id } }).then(function (res) {
      state.busy = false;
      btn.disabled = false;
      btn.classList.remove("is-loading");
      var link = res && (res.invoice_link || res.link);
      if (link && state.tg && typeof state.tg.openInvoice === "function") {
        state.tg.openInvoice(link, function (status) {
          if (status === "paid") {
            haptic("notify", "success");
            toast(t("paid"), "ok");
            // the bot records the payment when Telegram reports it: look again a few times
            [800, 2500, 6000].forEach(function (ms) {
              setTimeout(function () { if (parseRoute(location.hash).name === "premium") { state.me = null; render(); } }, ms);
            });
          }
        });
      } else if (link) {
        location.href = link;
      }
    }, function (err) {
      state.busy = false;
      btn.disabled = false;
      btn.classList.remove("is-loading");
      if (err instanceof ApiError && err.status === 501) toast(t("comingSoon") + " ✨", "soon");
      else if (err && err.network) showBanner(t("offline"), function () { hideBanner(); }, "offline");
      else toast((err && err.message) || t("errorTitle"), "error");
    });
  }

  // ------------------------------------------------------------------ boot
  function boot(tg) {
    var params = hashParams(INITIAL_HASH);
    if (!tg && params.tgWebAppData) tg = fallbackWebApp(params);
    state.tg = tg;
    state.initData = (tg && typeof tg.initData === "string" && tg.initData) || "";
    var unsafe = (tg && tg.initDataUnsafe) || {};
    state.tgUser = unsafe.user || userFromInitData(state.initData);
    state.lang = normalizeLang((state.tgUser && state.tgUser.language_code) || navigator.language);
    document.documentElement.lang = state.lang;

    applyTheme();
    if (tg) {
      call(tg, "ready");
      call(tg, "expand");
      call(tg, "onEvent", "themeChanged", applyTheme);
      if (tg.BackButton && versionAtLeast("6.1")) call(tg.BackButton, "onClick", goBack);
      if (tg.SettingsButton && versionAtLeast("7.0")) {
        call(tg.SettingsButton, "onClick", function () { go("#/settings"); });
        call(tg.SettingsButton, "show");
      }
    }
    if (window.matchMedia) {
      var mq = matchMedia("(prefers-color-scheme: dark)");
      var onScheme = function () { if (!tg || !tg.colorScheme) applyTheme(); };
      if (mq.addEventListener) mq.addEventListener("change", onScheme);
    }
    document.getElementById("banner-retry").addEventListener("click", function () {
      var retry = state.retry;
      haptic("impact", "light");
      if (retry) retry();
    });
    startRoute();
    window.addEventListener("hashchange", function () { render(); });
    window.addEventListener("online", function () {
      var el = document.getElementById("banner");
      if (!el.hidden && el.classList.contains("banner-offline") && state.retry) state.retry();
    });
    document.documentElement.classList.add("ready");
    render();
  }

  window.__vitte = { state: state, render: render };
  loadTelegram().then(boot, function () { boot(null); });
})();
