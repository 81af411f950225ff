"""``MODEL.COMPILE``: ``torch.compile`` with a fallback to the uncompiled model.

``torch.compile`` is lazy: besides the errors it raises at once (an unsupported Python version or
platform), most failures -- no C compiler for the generated kernels, an operation the compiler
cannot handle -- only surface at the first call of the compiled module, or at a later call that
needs a new graph (eval mode, another batch size). :class:`CompiledModule` therefore tries the
compiled module at every call until it fails once; then one warning line says why and the eager
module runs from there on. If the eager call fails too, that error is the model's own and propagates.

Under DDP the DDP-wrapped module is compiled (PyTorch's guidance: wrap first, then compile, so that
the compiler splits its graphs at DDP's gradient buckets).
"""
import contextlib
import logging
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)

# torch.compile backend; None = PyTorch's default (inductor). Tests set 'eager' / 'aot_eager' to exercise the
# wrapper quickly without generating kernels.
COMPILE_BACKEND: Optional[str] = None


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception (compiler errors can run to pages); for a
    backend failure, of the backend's own exception."""
    err = getattr(err, "inner_exception", None) or err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _backward_compiled_with_forward():
    """A context in which AOTAutograd compiles the backward graph together with the forward one (it
    otherwise waits for the first backward pass, where a failure could not fall back); a no-op context
    on PyTorch versions without that setting."""
    config = getattr(getattr(torch, "_functorch", None), "config", None)
    if config is None or not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


class CompiledModule(torch.nn.Module):
    """``module`` run through ``torch.compile``, falling back to ``module`` itself on the first failure.

    ``module`` is this wrapper's submodule of that name, so ``train()``/``eval()`` reach it, and so do
    attribute look-ups the wrapper does not answer itself; save ``module``'s own ``state_dict`` (this
    wrapper's keys carry a ``module.`` prefix, as under DDP).
    The compiled module shares ``module``'s parameters and buffers.

    Attributes:
        failure: why compilation was given up (one line), or ``None`` while the compiled module runs.
    """

    def __init__(self, module: torch.nn.Module, backend: Optional[str] = None):
        super().__init__()
        self.module = module
        self.failure: Optional[str] = None
        compiled = None
        try:
            compiled = torch.compile(module, backend=backend or COMPILE_BACKEND or "inductor")
        except Exception as err:  # noqa: BLE001 -- any reason not to compile means running eager
            self._give_up(err)
        object.__setattr__(self, "_compiled", compiled)  # not registered: it is ``module`` again

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go through the compiled module."""
        return self._compiled is not None

    def __getattr__(self, name: str) -> Any:
        """Attributes of ``module`` (e.g. ``model.transformer``) reach through the wrapper."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)

    def _give_up(self, err: BaseException) -> None:
        self.failure = _one_line(err)
        object.__setattr__(self, "_compiled", None)
        logger.warning("MODEL.COMPILE: torch.compile failed (%s); running the model uncompiled", self.failure)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                with _backward_compiled_with_forward():
                    return self._compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 -- compiler errors have no common base class
                self._give_up(err)
        return self.module(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, enabled: bool, backend: Optional[str] = None) -> torch.nn.Module:
    """``CompiledModule(module)`` when ``enabled`` (``MODEL.COMPILE``), else ``module`` unchanged."""
    return CompiledModule(module, backend) if enabled else module
