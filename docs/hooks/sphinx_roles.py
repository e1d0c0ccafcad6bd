"""Griffe extension: the docstrings' Sphinx markup as the Markdown that mkdocstrings renders.

The library's docstrings are Google style (``Args:``, ``Returns:``, doctests) as Sphinx's
napoleon reads them, with Sphinx's inline markup, which reads well in ``help()`` and in an
editor. mkdocstrings renders Markdown, so before griffe parses a docstring this extension
rewrites:

- ``:func:`name```, ``:class:``, ``:meth:``, ``:attr:``, ``:mod:`` as a cross-reference to
  the object's entry in the API reference when the name resolves (from the docstring's own
  scope) to a documented public object of the package, as inline code otherwise (a private
  helper, torch). A leading ``~`` shows the last component only, as in Sphinx. A linked name
  whose entry disappears from the reference fails the strict build.
- ``:math:`x``` as ``$x$`` and a ``.. math::`` block as a ``$$`` block, which
  ``pymdownx.arithmatex`` hands to MathJax.
- an ``Example:`` section as ``Examples:``, the name griffe knows (napoleon takes both), so
  its doctests render as code; a doctest outside such a section (a paragraph of ``>>>``
  lines, which Sphinx shows as code) as a fenced ``pycon`` block.

Named in mkdocs.yml under the mkdocstrings handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|attr|mod|obj|data):`(?P<target>[^`]+)`")
MATH_ROLE = re.compile(r":math:`(?P<formula>[^`]+)`")
MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*$")
EXAMPLE_SECTION = re.compile(r"^Example:[ \t]*$", re.MULTILINE)


def math_blocks(text: str) -> str:
    """Each ``.. math::`` directive and its indented body as a ``$$`` block at the directive's indent."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        directive = MATH_DIRECTIVE.match(lines[index])
        if directive is None:
            out.append(lines[index])
            index += 1
            continue
        indent = directive["indent"]
        body: list[str] = []
        index += 1
        # The body: the lines indented deeper than the directive, blank lines within it included.
        while index < len(lines) and (not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > len(indent)):
            body.append(lines[index])
            index += 1
        while body and not body[-1].strip():
            index -= 1  # a blank line after the body separates it from what follows
            body.pop()
        depth = min(len(line) - len(line.lstrip()) for line in body if line.strip()) if body else 0
        out += [f"{indent}$$", *(f"{indent}{line[depth:]}" if line.strip() else "" for line in body), f"{indent}$$"]
    return "\n".join(out)


def doctest_blocks(text: str) -> str:
    """Each unindented paragraph that opens with ``>>>`` (a doctest outside a section) fenced as ``pycon``."""
    paragraphs = text.split("\n\n")
    return "\n\n".join(f"```pycon\n{paragraph}\n```" if paragraph.startswith(">>>") else paragraph for paragraph in paragraphs)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._package = pkg
        self._rewrite(pkg)

    def _rewrite(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            text = doctest_blocks(EXAMPLE_SECTION.sub("Examples:", math_blocks(obj.docstring.value)))
            text = MATH_ROLE.sub(lambda match: f"${match['formula']}$", text)
            obj.docstring.value = ROLE.sub(lambda match: self._reference(obj, match["target"]), text)
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member)  # type: ignore[arg-type]

    def _reference(self, scope: griffe.Object, target: str) -> str:
        """A Markdown cross-reference to ``target`` as seen from ``scope``, or inline code."""
        short = target.startswith("~")
        name = target.lstrip("~!")
        shown = f"`{name.rpartition('.')[2] if short else name}`"
        path = self._documented_path(scope, name)
        return shown if path is None else f"[{shown}][{path}]"

    def _documented_path(self, scope: griffe.Object, name: str) -> str | None:
        """The full path of ``name`` when it is a documented public object of the package, else None."""
        head, _, rest = name.partition(".")
        try:
            path = name if head == self._package.name else scope.resolve(head) + (f".{rest}" if rest else "")
        except griffe.NameResolutionError:
            return None
        package, _, inner = path.partition(".")
        if package != self._package.name or any(part.startswith("_") for part in inner.split(".")):
            return None
        try:
            obj = self._package[inner] if inner else self._package
        except (KeyError, griffe.AliasResolutionError):
            return None
        return path if obj.docstring is not None else None
