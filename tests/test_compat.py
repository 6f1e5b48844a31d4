"""The torchvision shim acts only when torchvision's extension cannot load."""
import subprocess
import sys

import torch

from dartok import _compat


def test_noop_when_torchvision_already_imported():
    import torchvision  # noqa: F401  (conftest imported dartok first)
    assert _compat.torchvision_extension_loads() is True
    assert _compat.ensure_torchvision_importable() is False


def test_noop_on_healthy_install(monkeypatch):
    """A loadable extension → no schemas defined."""
    monkeypatch.setattr(_compat, "_shim_library", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    defined = []
    monkeypatch.setattr(torch.library, "Library", lambda *a: defined.append(a))
    assert _compat.ensure_torchvision_importable() is False
    assert defined == []


def test_shim_defines_schemas_when_extension_fails(monkeypatch):
    monkeypatch.setattr(_compat, "_shim_library", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)

    def fail(path):
        raise OSError("libcudart.so: cannot open shared object file")

    monkeypatch.setattr(torch.ops, "load_library", fail)
    defined = []

    class FakeLibrary:
        def __init__(self, ns, kind):
            assert (ns, kind) == ("torchvision", "DEF")

        def define(self, schema):
            defined.append(schema.split("(")[0])

    monkeypatch.setattr(torch.library, "Library", FakeLibrary)
    assert _compat.ensure_torchvision_importable() is True
    assert {"nms", "roi_align", "deform_conv2d"} <= set(defined)


def test_timm_imports_after_dartok_in_fresh_process():
    code = "import dartok, timm, torchvision; print(timm.create_model('vit_micro_patch8').__class__.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "VisionTransformer" in out.stdout
