"""Tracing a torch module to one ONNX file with the dynamo exporter, and reading that file back.

Why dynamo: the legacy TorchScript exporter hard-codes sequence lengths (FIELD-NOTES). Every
export is saved slimmed (``rec.export.graph_surgery.slim``) and checked with ``onnx.checker``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rec.export.errors import ExportError
from rec.export.graph_surgery import slim

__all__ = ["torch_export", "io_spec", "opset_of"]


def torch_export(module: torch.nn.Module, args: tuple, dynamic_shapes: tuple, names: list[str], output: str,
                 path: Path, opset: int | None) -> None:
    """Export ``module(*args)`` to ``path`` (one file, no external data), slimmed and checked.

    Raises:
        ExportError: The exporter or the checker failed.
    """
    import onnx

    kwargs: dict[str, Any] = dict(
        dynamo=True, dynamic_shapes=dynamic_shapes, input_names=names, output_names=[output],
        external_data=False, optimize=True, verbose=False,
    )
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        program = torch.onnx.export(module, args, **kwargs)
        onnx.save_model(slim(program.model_proto), str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - exporter/checker failures become one clear error
        raise ExportError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def io_spec(session) -> dict[str, list[dict[str, Any]]]:  # noqa: ANN001
    """Names, dtypes and symbolic shapes of an ORT session's inputs and outputs (for manifests)."""
    def spec(v) -> dict[str, Any]:  # noqa: ANN001
        return {"name": v.name, "dtype": v.type, "shape": list(v.shape)}

    return {"inputs": [spec(v) for v in session.get_inputs()], "outputs": [spec(v) for v in session.get_outputs()]}


def opset_of(path: Path) -> int:
    """The default-domain opset an ONNX file was written with."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))
