"""The conversion toolchain (installed as ``edgert.converters``).

Converters to GGUF, ONNX and TensorRT with quantization and a quality gate are the
subject of issue 3; their heavy dependencies come with the ``convert`` extra.
"""
