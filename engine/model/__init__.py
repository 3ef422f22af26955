"""The model package: model folders, import, the ONNX Runtime decode loop and the async generator."""
