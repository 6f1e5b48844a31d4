"""The package's shape (docs/architecture.md): no import cycle, citations that resolve, old paths kept."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import dartok

PKG_DIR = Path(dartok.__file__).resolve().parent
REPO = PKG_DIR.parent.parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG_DIR.rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    """Edges module → package module it imports, anywhere in its code (lazy imports count).

    ``from X import name`` points at ``X.name`` when that is a module of the package, else
    at ``X``. Implicit imports of parent packages are not edges.
    """
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(name, is_pkg, node.level, node.module) if node.level else (node.module or "")
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "dartok.tokenizer" in graph and "dartok.partition" in graph["dartok.tokenizer"]
    assert _cycles(graph) == []


def test_no_module_imports_the_package_root():
    # dartok/__init__ imports everything: a module importing it (for __version__, say) is a cycle
    graph = import_graph()
    assert [m for m, deps in graph.items() if "dartok" in deps] == []


def test_core_does_not_import_models_training_or_tools():
    core = ("dartok.partition", "dartok.resample", "dartok.scorer", "dartok.tokenizer", "dartok.localization",
            "dartok.warp", "dartok.compat.hcplab")  # compat.hcplab: DART(compat="hcplab"), torch + torchvision only
    graph = import_graph()
    for m in core:
        assert graph[m] <= {"dartok._compat", "dartok._io", *core}, (m, graph[m])


def test_docstrings_cite_the_repository_not_the_external_spec():
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in PKG_DIR.rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "SPEC" in line]
    assert offenders == []
    method = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    cited = {int(n) for p in PKG_DIR.rglob("*.py") for n in re.findall(r"method\.md §(\d+)", p.read_text("utf-8"))}
    sections = {int(n) for n in re.findall(r"^## §(\d+)", method, flags=re.M)}
    assert cited and cited <= sections


README_PATHS = [
    "dartok.partition", "dartok.resample", "dartok.scorer", "dartok.tokenizer", "dartok.models", "dartok.vim",
    "dartok.videomamba", "dartok.video", "dartok.video_data", "dartok.mamba", "dartok.engine", "dartok.checkpoint",
    "dartok.data", "dartok.bench", "dartok.compare", "dartok.viz", "dartok.cli",
]


@pytest.mark.parametrize("module", README_PATHS)
def test_documented_import_paths_still_import(module):
    importlib.import_module(module)


def test_public_names_unchanged():
    assert sorted(dartok.__all__) == sorted([
        "DART", "DEFAULT_ALPHA", "DartOutput", "Scorer", "band_layout", "box_average", "create_model",
        "edge_pdf", "is_dart", "load_vit_weights", "patch_timm", "quantile_boxes", "sample_patches",
        "tokens_to_map", "uniform_pdf", "__version__",
        "DartVisionMamba", "VideoMamba", "VisionMamba", "load_vim_weights", "patch_vim", "selective_scan",
        "DartVideoMamba", "VideoDART", "frame_token_counts", "patch_videomamba",
    ])
    for name in dartok.__all__:
        assert getattr(dartok, name) is not None


LAYERS = [  # docs/architecture.md: dependencies point one way, down this list
    ("dartok._io", "dartok._compat", "dartok._version"),
    ("dartok.partition", "dartok.resample", "dartok.scorer", "dartok.tokenizer", "dartok.video_tokenizer",
     "dartok.localization", "dartok.warp", "dartok.compat"),
    ("dartok.ops", "dartok.layers"),
    ("dartok.models",),
    ("dartok.data",),
    ("dartok.train",),
    ("dartok.tools",),
    ("dartok.cli",),
]
SHIMS = {"dartok.engine", "dartok.checkpoint", "dartok.video_data", "dartok.video", "dartok.vim", "dartok.videomamba",
         "dartok.mamba", "dartok.bench", "dartok.compare", "dartok.viz"}


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_dependencies_point_down_the_layers_and_never_through_an_old_path():
    graph = import_graph()
    assert set(graph) - {"dartok"} - SHIMS == {m for m in graph if _layer(m) is not None}  # every module placed
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    via_shim = [(m, d) for m, deps in graph.items() for d in deps if _layer(m) is not None and d in SHIMS]
    assert upward == [] and via_shim == []


def test_assigning_through_an_old_path_reaches_the_owning_module(monkeypatch):
    from dartok import mamba
    from dartok.ops import selective_scan as scan_ops

    sentinel = [lambda *a: None]
    monkeypatch.setattr(mamba, "_CUDA_SCAN", sentinel)
    assert scan_ops._CUDA_SCAN is sentinel and mamba._CUDA_SCAN is sentinel
    monkeypatch.undo()
    assert scan_ops._CUDA_SCAN is not sentinel
    own = mamba.selective_scan  # a name the shim itself holds: both views change
    monkeypatch.setattr(mamba, "selective_scan", None)
    assert mamba.selective_scan is None and scan_ops.selective_scan is None
    monkeypatch.undo()
    assert mamba.selective_scan is own is scan_ops.selective_scan
