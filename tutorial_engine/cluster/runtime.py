"""Joining or starting the Ray cluster every distributed piece of the engine runs on.

With no address, :func:`connect` starts a local Ray instance (one node: this machine),
as ``ray.init()`` does; with ``address`` or the ``RAY_ADDRESS`` environment variable it
joins a cluster started the standard way (``ray start --head`` on one machine,
``ray start --address=HEAD:6379`` on the others).
"""

from __future__ import annotations

import os


def require_ray():
    """``ray``, or an ImportError that names the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ImportError('Ray is not installed: pip install -e ".[cluster]" (it brings ray[serve])') from err
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None):
    """Connect this process to Ray once; returns the ``ray`` module.

    Args:
        address: a running cluster (``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``);
            ``None`` reads ``RAY_ADDRESS``, and without it starts a local instance.
        num_cpus: CPUs a *local* instance offers (``None``: all of them); ignored when joining.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    # "local": always a new instance (a bare ray.init() would join whatever cluster a
    # `ray start` left recorded in /tmp/ray, even a dead one).
    ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
             logging_level="WARNING", log_to_driver=False)
    return ray
