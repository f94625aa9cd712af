"""Alerts: rules, the alert engine and notifiers (CONTRACT.md §6)."""
