"""Helpers for tests that start a real Airflow api-server (shared with the distributed bench: harness.topology)."""

from harness.topology import admin_headers, admin_password, free_port, wait_until_healthy

__all__ = ["admin_headers", "admin_password", "free_port", "wait_until_healthy"]
