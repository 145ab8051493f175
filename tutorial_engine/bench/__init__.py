"""Benchmarks: ``python -m tutorial_engine bench`` (workload throughput, peers,
roofline, ablations) and ``python -m tutorial_engine.bench.cuda_graphs`` (decode
step time with and without CUDA graphs). Results are JSON files under book/data/."""
