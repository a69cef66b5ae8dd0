"""The user-namespace default of the spec layer: on for a container with a
root of its own (rootfs, bundle or image), "host" on the host's root."""
import pytest

from agent.spec import UserError, parse_userns


@pytest.mark.parametrize("root", ["/srv/rootfs", "sha256:" + "ab" * 32])
def test_a_container_with_its_own_root_gets_a_user_namespace_by_default(root):
    assert parse_userns(None, root, 0, 0) == "auto"
    assert parse_userns("", root, 0, 0) == "auto"
    assert parse_userns("host", root, 0, 0) == "host"


def test_the_hosts_root_keeps_the_hosts_ids():
    assert parse_userns(None, "", 0, 0) == "host"
    with pytest.raises(UserError, match="needs a rootfs, bundle or image"):
        parse_userns("auto", "", 0, 0)
