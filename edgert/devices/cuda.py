"""The few CUDA runtime calls edgert needs, on cuda-python (NVIDIA's bindings).

cuda-python is optional and imported lazily (``CudaRuntime.load()``): ``cuda.bindings.runtime``
on cuda-python >= 12.6, ``cuda.cudart`` before. Every call returns ``(cudaError_t, *values)``;
errors become ``GenerationError``. The TensorRT runner moves buffers with it, and the device
facts ask it for the GPU's compute capability where NVML is absent (Jetson before JetPack 7).
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from ..errors import GenerationError, unavailable


class CudaRuntime:
    """A CUDA runtime module (cuda-python's cudart) behind checked calls."""

    def __init__(self, cudart: Any):
        self.rt = cudart

    @classmethod
    def load(cls) -> "CudaRuntime":
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
            except ImportError:
                raise unavailable("CUDA runtime (cuda-python)", "gpu") from None
        return cls(cudart)

    def _check(self, result: Any, what: str) -> Any:
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise GenerationError(f"CUDA {what} failed: {err}")
        return values[0] if len(values) == 1 else values

    def device_capability(self, index: int) -> Tuple[int, int, str]:
        prop = self._check(self.rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return int(prop.major), int(prop.minor), name

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, pointer: int) -> None:
        self._check(self.rt.cudaFree(pointer), "cudaFree")

    def stream(self) -> Any:
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def to_device(self, pointer: int, array: np.ndarray, stream: Any) -> None:
        array = np.ascontiguousarray(array)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, stream), "cudaMemcpyAsync")

    def to_host(self, array: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, stream), "cudaMemcpyAsync")
