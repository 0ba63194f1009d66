from __future__ import annotations

import inspect

import modelhub.serving as serving


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(serving).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(serving.__all__) == sorted(public)


def test_every_name_in_all_is_importable() -> None:
    for name in serving.__all__:
        assert getattr(serving, name) is not None, name


def test_errors_share_one_root_and_specialise_builtins() -> None:
    assert issubclass(serving.ExecutorTimeoutError, TimeoutError)
    assert issubclass(serving.ExecutorConfigError, ValueError)
    assert issubclass(serving.ExecutorClosedError, RuntimeError)
    assert issubclass(serving.CalledFromExecutorLoopError, RuntimeError)
    for error in (
        serving.ExecutorTimeoutError,
        serving.ExecutorConfigError,
        serving.ExecutorClosedError,
        serving.CalledFromExecutorLoopError,
    ):
        assert issubclass(error, serving.ModelhubError)


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("modelhub").joinpath("py.typed").is_file()
