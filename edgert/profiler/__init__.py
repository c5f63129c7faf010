"""The profiler: microbenchmarks, model measurements and fitted roofline latency/energy models."""
