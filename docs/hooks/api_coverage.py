"""MkDocs hook: the API reference covers exactly the public API.

Every name in ``ensemble_diversity.__all__`` needs its ``::: ensemble_diversity.NAME`` entry in
docs/api.md, and every entry there must name one of them; otherwise the build stops, naming
what is missing or extra. A new public function thus cannot ship without its reference entry.
Named in mkdocs.yml under ``hooks``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

PACKAGE = "ensemble_diversity"
ENTRY = re.compile(rf"^::: {PACKAGE}\.(\w+)[ \t]*$", re.MULTILINE)


def public_names(init: Path) -> set[str]:
    """The literal ``__all__`` of the package's ``__init__.py``, read without importing it (no torch needed)."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets):
            return set(ast.literal_eval(node.value))
    raise PluginError(f"Expected {init} to assign a literal __all__, but it has none")


def on_pre_build(config: MkDocsConfig) -> None:
    root = Path(config.config_file_path).parent
    api = Path(config.docs_dir) / "api.md"
    public = public_names(root / "src" / PACKAGE / "__init__.py")
    documented = set(ENTRY.findall(api.read_text()))
    if missing := sorted(public - documented):
        raise PluginError(f"Expected docs/api.md to have a '::: {PACKAGE}.NAME' entry for each name in __all__, but it lacks {missing}")
    if extra := sorted(documented - public):
        raise PluginError(f"Expected docs/api.md's '::: {PACKAGE}.NAME' entries to name members of __all__, but {extra} are not")
