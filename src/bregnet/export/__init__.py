"""ONNX export and the converter for the official BReG-NeXt TensorFlow checkpoint."""
