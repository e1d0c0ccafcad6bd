"""MkDocs hook: the site's pages keep their repository paths.

The Markdown in this repository is written to be read on the repository itself: README.md links
``docs/method.md``, docs/reproducing.md links ``../examples/README.md``. MkDocs would take
``docs/`` as the root and lose everything outside it, so this hook hands it the files of
``docs/`` as ``docs/...`` and adds the Markdown files that live elsewhere at their own paths.
README.md becomes the home page (``index.html``; examples/README.md likewise becomes
``examples/index.html``), and every relative link resolves in the site as it does in the
repository, so strict mode checks each one. Named in mkdocs.yml under ``hooks``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

# Markdown outside docs/ that the site carries, by repository path.
OUTSIDE_DOCS = ("README.md", "CHANGELOG.md", "examples/README.md")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent.resolve()
    docs_dir = Path(config.docs_dir).resolve()
    prefix = docs_dir.relative_to(root).as_posix()

    def at_repository_path(path: str, inclusion: InclusionLevel = InclusionLevel.UNDEFINED) -> File:
        return File(path, src_dir=str(root), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls, inclusion=inclusion)

    pages = Files([at_repository_path(path) for path in OUTSIDE_DOCS])
    for file in files:
        if file.abs_src_path is not None and Path(file.abs_src_path).resolve().is_relative_to(docs_dir):
            pages.append(at_repository_path(f"{prefix}/{file.src_uri}", file.inclusion))
        else:  # the theme's and the plugins' own files
            pages.append(file)
    return pages
