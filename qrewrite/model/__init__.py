"""Model I/O: loading with validation, atomic saving, unique names and opset helpers."""
