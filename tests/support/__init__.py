"""Helpers shared by tests: signed Telegram initData, a fake Bot API server, a running web app."""
