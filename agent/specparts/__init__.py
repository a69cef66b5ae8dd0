"""The parts of agent.spec, one job each; import them through agent.spec.

- `fields`     the checks every field shares: text, flags, KEY=VALUE pairs, container paths
- `values`     the small value types a spec holds: Volume, Device, RestartPolicy (and its parser)
- `defaults`   what a spec gets when the request leaves a key out
- `model`      ContainerSpec, the validated result
- `stored`     ContainerSpec <-> the JSON-safe dict kept in the state DB
- `process`    argv, env, workdir, user, hostname
- `identity`   the container's name and labels
- `mounts`     host paths: rootfs, volumes, bundle dir (opened once, checked as opened), tmpfs
- `devices`    --device: Docker's syntax, resolved to a node on this host
- `resources`  limits and the log size
- `security`   capabilities (the privilege defaults), cap_add/cap_drop, user namespaces
- `bundle`     an OCI bundle's config.json as a request body

The network keys live in agent/network/netspec.py.
"""
