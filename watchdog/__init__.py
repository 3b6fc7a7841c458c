"""watchdog: a sidecar that watches AI agents through their OpenTelemetry traces and stops them."""

__version__ = "0.1.0"
