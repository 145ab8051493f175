"""Beyond one machine, on Ray (chapter 11): engine replicas behind a prefix-cache-aware
router (Ray Serve), and tensor-parallel workers as Ray actors. Needs the ``cluster``
extra (``pip install -e ".[cluster]"``, which brings ``ray[serve]``)."""
