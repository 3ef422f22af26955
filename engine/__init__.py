"""Parley's conversation engine: settings, Redis store, prompt building and the ONNX model."""
