"""Classes named by dotted path in the settings: validated, built once per path, shared."""

from __future__ import annotations

import sys
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured

from cache_app.core.plugins import Plugins

BUILT: list[object] = []


class Counted:
    dim = 3

    def __init__(self) -> None:
        sum(range(200_000))  # a build that takes a while, as a model's does: room for another thread to enter
        BUILT.append(self)

    def embed(self, texts: list[str]) -> list[str]:
        return texts


class NotCallable:
    dim = 3
    embed = "not a method"


def plugins() -> Plugins[Counted]:
    return Plugins("EMBEDDER", "Embedder", ("dim", "embed()"), "the protocol")


def test_threads_asking_at_once_share_one_instance():
    # Switching threads every microsecond, eight first calls overlap inside the build: without the
    # loader's lock most rounds build several instances (measured: 9 rounds in 10), so five rounds
    # that each build exactly one are the lock's work, not luck.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            BUILT.clear()
            loader, start = plugins(), threading.Barrier(8)
            got: list[Counted] = []

            def ask(loader: Plugins[Counted] = loader, start: threading.Barrier = start) -> None:
                start.wait()
                got.append(loader.load(f"{__name__}.Counted"))

            threads = [threading.Thread(target=ask) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(BUILT) == 1
            assert len(got) == 8
            assert all(instance is BUILT[0] for instance in got)
    finally:
        sys.setswitchinterval(previous)


def test_the_setting_names_the_default(settings):
    settings.MGECACHE = {**settings.MGECACHE, "EMBEDDER": f"{__name__}.Counted"}
    assert isinstance(plugins().load(), Counted)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"{__name__}.Missing", r"MGECACHE\['EMBEDDER'\] = '.*Missing' cannot be imported"),
        (f"{__name__}.NotCallable", r"Embedder '.*NotCallable' has no embed\(\); see the protocol"),
        ("builtins.object", r"has no 'dim'"),
    ],
)
def test_a_path_that_cannot_serve_is_refused_with_what_is_missing(path, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        plugins().load(path)
