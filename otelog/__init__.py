"""otelog: an OpenTelemetry-native log and trace backend."""

__version__ = "0.1.0"
