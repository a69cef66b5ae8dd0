"""Checkpoint and restore of containers with CRIU.

- `criu.py`     the CRIU driver: the `criu` command (check, dump, restore),
                its version, the one-line reason when it cannot run here.
                Run by the launcher (agentd never forks).
- `layout.py`   a checkpoint on disk: state_dir/checkpoints/<name>/ with
                `images/` (CRIU's), `checkpoint.json` (the record) and the logs.
- `refusals.py` what CRIU cannot take from a container, in one line each.
- `launcher_ops.py` the launcher's side: dump a running container's tree,
                restore a tree into a new cgroup and adopt it.
- `service.py`  agentd's side: checkpoint, ls, rm, restore, export, import.
- `archive.py`  one tar file for --export / --import.
- `metrics.py`  the checkpoint families of the agent's own metrics.
"""
