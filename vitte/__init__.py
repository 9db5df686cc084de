"""Vitte: a romantic AI companion for Telegram (core package; no UI code here)."""

__version__ = "0.1.0"
