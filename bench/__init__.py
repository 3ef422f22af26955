"""`make bench`: Parley's ONNX engine against llama.cpp and transformers on the same weights (see bench/run.py)."""
