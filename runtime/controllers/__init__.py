"""Resource limits, one module per cgroup v2 controller (as runc's fs2).

    values.py  pure parsers every controller shares (sizes, weights, ...)
    cpu.py memory.py io.py pids.py cpuset.py
               each: its user-input parsers (PARSERS), rendering to its
               files (render) and reading them back (read_back)
    value.py   the Limits value dispatching to them; read_limits
    oci.py     OCI runtime-spec linux.resources -> Limits

``runtime.limits`` re-exports the public names for callers.
"""
