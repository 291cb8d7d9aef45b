"""Keep a test Ray cluster on 127.0.0.1 (on the PYTHONPATH of the cluster tests only).

`ray start --node-ip-address 127.0.0.1` and `ray.init(address="127.0.0.1:...")` replace the
loopback address with the machine's own (`ray._private.services.resolve_ip_for_localhost`),
so a multi-node cluster on one machine would talk over its network interface. The tests may
use the loopback only: every Python process of theirs (the `ray start` commands, the workers
Ray spawns, which inherit the environment, and the driver) answers 127.0.0.1 for "this
node's address" instead.
"""

import os

if os.environ.get("OVERMAP_RAY_LOOPBACK") == "1":
    try:
        import ray._private.services as _services
    except ImportError:  # not a Ray process
        pass
    else:
        _services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
