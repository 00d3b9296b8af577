"""Build the rings of a test-world Swift and start its four servers (used by swift-up.sh).

Usage: /usr/bin/python3 swift-start.py SWIFT_DIR ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT

Started one by one, each Swift server is a Python process that spends ~0.5 s of CPU importing
Swift (pkg_resources, eventlet) and patching for eventlet before it can listen: ~2.5 s for the
five processes (rings included) on a 2-core machine. Here that is done once, the rings are built
with it, and then one child per server is forked: the children share the imports and only load
their own config (~1 s of CPU in all). Each child runs in its own session with stdin from /dev/null and
stdout/stderr appended to SWIFT_DIR/log/NAME.log, exactly as Swift's own swift-NAME-server
script would run it with -v; its pid goes to SWIFT_DIR/run/NAME.pid. This process then exits.
"""
import os
import sys

from swift.common.utils import eventlet_monkey_patch

# Each server patches for eventlet before it loads its app. Done here, once: the patch looks
# for every lock made so far with a full garbage collection per lock, ~0.3 s of CPU that all
# four children would otherwise pay after the fork. In the children it is then a no-op, and
# each child's server makes its own eventlet hub.
eventlet_monkey_patch()

from swift.common.ring import RingBuilder  # noqa: E402
from swift.common.storage_policy import POLICIES  # noqa: E402
from swift.common.wsgi import run_wsgi  # noqa: E402
# the apps and middlewares the pipelines load: imported before the fork, so each child
# finds them in sys.modules
import swift.account.server  # noqa: E402,F401
import swift.container.server  # noqa: E402,F401
import swift.obj.server  # noqa: E402
import swift.proxy.server  # noqa: E402,F401
import swift.common.middleware.s3api.s3api  # noqa: E402,F401
import swift.common.middleware.tempauth  # noqa: E402,F401
import swift.common.middleware.slo  # noqa: E402,F401
import swift.common.middleware.crypto.keymaster  # noqa: E402,F401


def build_rings(out, ports):
    """One device d1 on 127.0.0.1, one replica, 2^6 partitions; one object ring per
    storage policy of /etc/swift/swift.conf (the proxy refuses to start without them)."""
    rings = {"account": ports["account"], "container": ports["container"]}
    for p in POLICIES:
        if p.policy_type != "replication":
            sys.exit("/etc/swift/swift.conf: policy %d is %s; only replication policies are set up"
                     % (p.idx, p.policy_type))
        rings[p.ring_name] = ports["object"]
    for name, port in rings.items():
        b = RingBuilder(6, 1, 0)
        b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                   "device": "d1", "weight": 1})
        b.rebalance()
        b.get_ring().save(os.path.join(out, name + ".ring.gz"))


def spawn(sdir, name):
    pid = os.fork()
    if pid:
        with open(os.path.join(sdir, "run", name + ".pid"), "w") as f:
            f.write("%d\n" % pid)
        return
    try:
        os.setsid()  # a test runner's Ctrl-C must not reach it; swift-down.sh stops it
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(os.path.join(sdir, "log", name + ".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        extra = {"global_conf_callback": swift.obj.server.global_conf_callback} if name == "object" else {}
        rc = run_wsgi(os.path.join(sdir, name + "-server.conf"), name + "-server", verbose=True, **extra)
    except BaseException as e:  # the parent has gone on: the log is the only place left to say it
        print("%s-server: %r" % (name, e), file=sys.stderr)
        rc = 1
    sys.stderr.flush()
    os._exit(rc or 0)


def main():
    sdir = sys.argv[1]
    ports = dict(zip(("account", "container", "object"), map(int, sys.argv[2:5])))
    build_rings(sdir, ports)
    for name in ("account", "container", "object", "proxy"):
        spawn(sdir, name)


if __name__ == "__main__":
    main()
