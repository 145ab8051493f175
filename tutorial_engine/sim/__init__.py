"""A simulated GPU for measuring the engine's host side on a CPU: a model-free,
asynchronous executor (``sim.device``) timed by a step-time model fitted to NVIDIA
H200 measurements (``sim.timing``, coefficients in ``h200_step_time.json``)."""
