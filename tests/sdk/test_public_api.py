from __future__ import annotations

import inspect

import modelhub.serving as serving

# The public API, pinned: a change to it must change this too.
PUBLIC_API: dict[str, set[str]] = {
    "running coroutines": {"AsyncExecutor", "run_async", "ExecutorConfig", "ExecutorHooks"},
    "errors": {
        "ModelhubError",
        "ExecutorConfigError",
        "ExecutorTimeoutError",
        "ExecutorClosedError",
        "CalledFromExecutorLoopError",
    },
    "helpers": {"is_loop_error", "request_id_var"},
}


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(serving).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(serving.__all__) == sorted(public)


def test_the_public_names_are_exactly_these() -> None:
    assert set(serving.__all__) == set().union(*PUBLIC_API.values())


def test_a_star_import_gives_exactly_the_names_in_all() -> None:
    namespace: dict[str, object] = {}
    exec("from modelhub.serving import *", namespace)  # raises if a name in __all__ is missing
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(serving.__all__)


def test_errors_share_one_root_and_specialise_builtins() -> None:
    assert issubclass(serving.ExecutorTimeoutError, TimeoutError)
    assert issubclass(serving.ExecutorConfigError, ValueError)
    assert issubclass(serving.ExecutorClosedError, RuntimeError)
    assert issubclass(serving.CalledFromExecutorLoopError, RuntimeError)
    for name in PUBLIC_API["errors"]:
        assert issubclass(getattr(serving, name), serving.ModelhubError), name


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("modelhub").joinpath("py.typed").is_file()


def test_the_python_running_the_suite_is_one_the_classifiers_name() -> None:
    """The classifiers say which Pythons are tested: each one make sdk-matrix runs is named."""
    import sys
    from importlib.metadata import metadata

    classifiers = metadata("modelhub-sdk").get_all("Classifier") or []
    running = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert running in classifiers
