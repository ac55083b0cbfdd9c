"""Calibration: data readers, statistics collectors and range methods."""
