"""``zero-shot``: nothing trains; the tenant is scored from its catalog text alone."""

from __future__ import annotations

from rec.adaptation.registry import AdaptationMethod, ExportKind, register


class ZeroShot(AdaptationMethod):
    name = "zero-shot"
    summary = "nothing trains: the base backbone ranks the tenant's items from their text"
    export = ExportKind.BASE


METHOD = register(ZeroShot())
