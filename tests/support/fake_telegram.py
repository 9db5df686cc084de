"""A fake `window.Telegram.WebApp` for browser tests, injected before the page's scripts.

It records what the page asks of Telegram (ready, expand, close, showConfirm, BackButton,
openInvoice, header colours) in `window.__tg`, and can switch themes (`window.__tgSetTheme`).
"""

from __future__ import annotations

import json
from typing import Any

LIGHT_THEME: dict[str, str] = {
    "bg_color": "#ffffff",
    "text_color": "#000000",
    "hint_color": "#8e8e93",
    "link_color": "#007aff",
    "button_color": "#007aff",
    "button_text_color": "#ffffff",
    "secondary_bg_color": "#f2f2f7",
    "header_bg_color": "#f8f8f8",
    "accent_text_color": "#007aff",
    "section_bg_color": "#ffffff",
    "section_header_text_color": "#6d6d72",
    "subtitle_text_color": "#8e8e93",
    "destructive_text_color": "#ff3b30",
    "section_separator_color": "#c8c7cc",
    "bottom_bar_bg_color": "#f2f2f7",
}

DARK_THEME: dict[str, str] = {
    "bg_color": "#000000",
    "text_color": "#ffffff",
    "hint_color": "#98989e",
    "link_color": "#3e88f7",
    "button_color": "#3e88f7",
    "button_text_color": "#ffffff",
    "secondary_bg_color": "#1c1c1d",
    "header_bg_color": "#1a1a1a",
    "accent_text_color": "#3e88f7",
    "section_bg_color": "#2c2c2e",
    "section_header_text_color": "#8d8e93",
    "subtitle_text_color": "#98989e",
    "destructive_text_color": "#eb5545",
    "section_separator_color": "#3d3d40",
    "bottom_bar_bg_color": "#1d1d1d",
}

_SCRIPT = r"""
(() => {
  const cfg = __CONFIG__;
  const rec = window.__tg = {
    ready: 0, expanded: 0, closed: 0, confirms: [], alerts: [], invoices: [],
    backVisible: false, backHandlers: [], headerColor: null, bgColor: null, haptics: 0
  };
  const listeners = {};
  const num = (v) => v.split(".").map(Number);
  const atLeast = (v) => {
    const a = num(cfg.version), b = num(String(v));
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const x = a[i] || 0, y = b[i] || 0;
      if (x !== y) return x > y;
    }
    return true;
  };
  const tg = {
    initData: cfg.initData,
    initDataUnsafe: cfg.unsafe,
    version: cfg.version,
    platform: "ios",
    colorScheme: cfg.scheme,
    themeParams: cfg.theme,
    isExpanded: false,
    isVersionAtLeast: atLeast,
    ready() { rec.ready++; },
    expand() { rec.expanded++; this.isExpanded = true; },
    close() { rec.closed++; },
    showConfirm(message, cb) {
      rec.confirms.push(message);
      setTimeout(() => cb && cb(cfg.confirmAnswer), 30);
    },
    showAlert(message, cb) { rec.alerts.push(message); setTimeout(() => cb && cb(), 0); },
    openInvoice(url, cb) { rec.invoices.push(url); setTimeout(() => cb && cb("cancelled"), 0); },
    setHeaderColor(c) { rec.headerColor = c; },
    setBackgroundColor(c) { rec.bgColor = c; },
    onEvent(name, fn) { (listeners[name] = listeners[name] || []).push(fn); },
    offEvent(name, fn) { listeners[name] = (listeners[name] || []).filter((f) => f !== fn); },
    BackButton: {
      isVisible: false,
      show() { this.isVisible = true; rec.backVisible = true; },
      hide() { this.isVisible = false; rec.backVisible = false; },
      onClick(fn) { rec.backHandlers.push(fn); },
      offClick(fn) { rec.backHandlers = rec.backHandlers.filter((f) => f !== fn); }
    },
    SettingsButton: { show() {}, hide() {}, onClick() {}, offClick() {} },
    HapticFeedback: {
      impactOccurred() { rec.haptics++; }, notificationOccurred() { rec.haptics++; }, selectionChanged() { rec.haptics++; }
    }
  };
  window.Telegram = { WebApp: tg };
  window.__tgPressBack = () => rec.backHandlers.forEach((fn) => fn());
  window.__tgSetTheme = (theme, scheme) => {
    tg.themeParams = theme;
    tg.colorScheme = scheme;
    (listeners.themeChanged || []).forEach((fn) => fn.call(tg));
  };
})();
"""


def fake_telegram_script(
    init_data: str,
    *,
    user: dict[str, Any] | None = None,
    scheme: str = "light",
    theme: dict[str, str] | None = None,
    version: str = "8.0",
    confirm_answer: bool = True,
    start_param: str | None = None,
) -> str:
    unsafe: dict[str, Any] = {}
    if user is not None:
        unsafe["user"] = user
    if start_param:
        unsafe["start_param"] = start_param
    config = {
        "initData": init_data,
        "unsafe": unsafe,
        "scheme": scheme,
        "theme": theme if theme is not None else (DARK_THEME if scheme == "dark" else LIGHT_THEME),
        "version": version,
        "confirmAnswer": confirm_answer,
    }
    return _SCRIPT.replace("__CONFIG__", json.dumps(config, ensure_ascii=False))
