"""Image references normalise as Docker's do (distribution's reference grammar)."""
import pytest

from agent.images.reference import ReferenceError, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,full,familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("team/app:v2", "docker.io/team/app:v2", "team/app:v2"),
    ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("registry.example/a/b/c", "registry.example/a/b/c:latest", "registry.example/a/b/c:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    (f"host:5000/x:1@{D}", f"host:5000/x:1@{D}", f"host:5000/x:1@{D}"),
])
def test_normalised_as_docker(text, full, familiar):
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_where_the_api_answers_and_what_is_asked_for():
    assert parse("busybox").api_host == "registry-1.docker.io"
    assert parse("127.0.0.1:5000/a").api_host == "127.0.0.1:5000"
    assert parse(f"a@{D}").manifest_ref == D
    assert parse("a:7").manifest_ref == "7"


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("BusyBox", "repository name is not valid"),
    ("a:b:c", "repository name is not valid"),
    ("busybox:-bad", "tag '-bad' is not valid"),
    ("busybox@sha256:123", "is not sha256: followed by 64"),
    ("a//b", "repository name is not valid"),
    ("x" * 300, "longer than 255"),
])
def test_refused_in_one_line_naming_what_is_wrong(text, why):
    with pytest.raises(ReferenceError) as e:
        parse(text)
    assert why in str(e.value) and "\n" not in str(e.value)
    assert e.value.status == 400
