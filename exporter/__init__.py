"""Prometheus exporter for Tencent Cloud database async operations."""

__version__ = "0.2.0"
