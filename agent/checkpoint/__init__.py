"""Checkpoint and restore of containers with CRIU.

- `criu.py`     the CRIU driver: the `criu` command (check, dump, restore),
                its version, the one-line reason when it cannot run here.
                Run by the launcher (agentd never forks).
- `layout.py`   a checkpoint on disk: state_dir/checkpoints/<name>/ with
                `images/` (CRIU's), `checkpoint.json` (the record) and the logs.
- `refusals.py` what CRIU cannot take from a container, in one line each.
- `externals.py` what stays outside the images: a bridged container's
                network namespace (agentd's, with --userns host) and the mounts agentd gives it,
                named external at the dump, given back at the restore.
- `volumes.py`  a restored container's volumes, checked as at create and
                staged from a descriptor for CRIU to bind.
- `nethook.py`  CRIU's action script at the restore of a container whose
                user namespace owns its network namespace (the default):
                eth0 moved into the namespace CRIU made, configured again.
- `placement.py` a restored container's address and user-namespace ids here.
- `launcher_ops.py` the launcher's side: dump a running container's tree,
                restore a tree into a new cgroup and adopt it.
- `service.py`  agentd's side: checkpoint, ls, rm, restore, export, import.
- `archive.py`  one tar file for --export / --import.
- `metrics.py`  the checkpoint families of the agent's own metrics.
"""
