"""README.md, CONTRIBUTING.md and docs/*.md: every relative link leads to a file, every repository
path the README names exists, the docs index lists every page, and the README stays a front page.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.helpers import REPO

#: The README is the front page (what it is, install, the two commands, the zoo); the rest is in docs/.
README_MAX_BYTES = 12 * 1024
README = REPO / 'README.md'
DOCS_INDEX = REPO / 'docs' / 'README.md'
PAGES = [README, REPO / 'CONTRIBUTING.md', *sorted((REPO / 'docs').glob('*.md'))]

#: The repository's tracked top-level folders: a path in the README's code that starts with one of
#: them names a file of this checkout (``work_dirs/``, ``data/``, ``checkpoints/`` are made by runs).
REPO_FOLDERS = ('configs', 'docs', 'repnext_mm', 'requirements', 'tests', 'tools')
#: A bare name with one of these suffixes in the README's code is a top-level file (`model-index.yml`).
TOP_LEVEL_SUFFIXES = ('.md', '.yml', '.yaml', '.ini', '.cfg', '.toml')

FENCED_BLOCK = re.compile(r'^ {0,3}(```+|~~~+).*?^ {0,3}\1', re.M | re.S)
INLINE_CODE = re.compile(r'(`+)(.+?)\1', re.S)
INLINE_LINK = re.compile(r'\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
REFERENCE_LINK = re.compile(r'^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?', re.M)
URL_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')
GLOB_CHARS = re.compile(r'[*?\[]')


def link_targets(markdown: str) -> list[str]:
    """The targets of the inline and reference links of a page, outside code."""
    prose = INLINE_CODE.sub('', FENCED_BLOCK.sub('', markdown))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file part does not exist (anchors are not checked)."""
    broken = []
    for target in link_targets(page.read_text(encoding='utf-8')):
        if not target or target.startswith('#') or URL_SCHEME.match(target):
            continue
        file_part = unquote(re.split(r'[#?]', target, maxsplit=1)[0])
        path = (REPO / file_part.lstrip('/')) if file_part.startswith('/') else page.parent / file_part
        if not path.exists():
            broken.append(target)
    return broken


def code_tokens(markdown: str) -> list[str]:
    """Every whitespace-separated word inside the page's code spans and fenced blocks."""
    code = [m.group(0) for m in FENCED_BLOCK.finditer(markdown)]
    code += [m.group(2) for m in INLINE_CODE.finditer(FENCED_BLOCK.sub('', markdown))]
    return [word.strip('\'"()[]{},;:`\\') for chunk in code for word in chunk.split()]


def repo_paths(markdown: str) -> list[str]:
    """The paths of this repository that a page names in its code."""
    paths = []
    for token in code_tokens(markdown):
        if token.split('/', 1)[0] in REPO_FOLDERS and '/' in token:
            paths.append(token)
        elif '/' not in token and token.endswith(TOP_LEVEL_SUFFIXES):
            paths.append(token)
    return paths


def missing_paths(markdown: str) -> list[str]:
    """The repository paths named in ``markdown``'s code that match no file or folder."""
    def exists(path: str) -> bool:
        return any(REPO.glob(path)) if GLOB_CHARS.search(path) else (REPO / path).exists()
    return [path for path in repo_paths(markdown) if not exists(path)]


@pytest.mark.parametrize('page', PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_lead_to_files(page):
    assert broken_links(page) == [], f'{page.relative_to(REPO)}: broken links'


def test_readme_names_only_existing_repository_paths():
    text = README.read_text(encoding='utf-8')
    assert len(repo_paths(text)) > 10  # the commands and the zoo's configs are checked
    assert missing_paths(text) == []


def test_readme_is_a_front_page():
    assert README.stat().st_size <= README_MAX_BYTES


def test_readme_keeps_the_two_commands():
    text = README.read_text(encoding='utf-8')
    fenced = ''.join(m.group(0) for m in FENCED_BLOCK.finditer(text))
    for command in ('bash tools/run_demo.sh', 'bash tools/run_tests.sh'):
        assert command in fenced


def test_docs_index_lists_every_page():
    listed = {(DOCS_INDEX.parent / target.split('#')[0]).resolve()
              for target in link_targets(DOCS_INDEX.read_text(encoding='utf-8'))}
    pages = {page.resolve() for page in DOCS_INDEX.parent.glob('*.md')} - {DOCS_INDEX.resolve()}
    assert sorted(p.name for p in pages - listed) == []


def test_the_checks_find_what_is_broken(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('[ok](page.md) [anchor](#x) [web](https://example.com/a.md) [gone](gone.md#x)\n'
                    '[ref]: missing/ref.md\n'
                    '```\n[in code](also_gone.md)\n```\n`[span](gone_too.md)`\n', encoding='utf-8')
    assert broken_links(page) == ['gone.md#x', 'missing/ref.md']
    text = ('`tools/train.py` `tools/no_such_tool.py` `configs/*/metafile.yml` `configs/*/nothing.yml`\n'
            '```bash\npython tools/gone.py work_dirs/x/epoch_1.pth\n```\n`no-such-file.yml`\n')
    assert sorted(missing_paths(text)) == ['configs/*/nothing.yml', 'no-such-file.yml',
                                           'tools/gone.py', 'tools/no_such_tool.py']
