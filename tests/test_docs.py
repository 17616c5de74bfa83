"""The documentation holds together: every relative link in README.md and docs/*.md reaches a
file (and a heading, when it names one), and every command in the README's bash blocks names a
real make target, `digitpipe` command line, `dvc` command line, stage and parameter."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.data import REPO
from helpers.project import copy_pipeline

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text without code: links inside code blocks and spans are examples, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not EXTERNAL.match(t)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {anchor(h) for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) ![gone](missing.png) [gone](there.md#nowhere)\n"
        "`[code](not-a-link.md)` [web](https://example.com/x.md)\n"
    )
    assert broken_links(page) == [
        f"missing.png: no file {tmp_path / 'missing.png'}",
        "there.md#nowhere: no heading #nowhere in there.md",
    ]


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    """A page nobody links to is a page nobody reads."""
    reached, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        for target in relative_links(page):
            file = (page.parent / target.partition("#")[0]).resolve()
            if file.suffix == ".md" and file.exists() and file not in reached:
                reached.add(file)
                todo.append(file)
    assert sorted(set(PAGES[1:]) - reached) == []


def bash_commands(page: Path) -> list[list[str]]:
    """Each command of the page's bash blocks as its words: continuation lines joined, a quoted
    string over several lines (python -c "...") kept whole."""
    commands, pending = [], ""
    for block in BASH_BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            pending = ""
            if words:
                commands.append(words)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def params_key_exists(key: str) -> bool:
    """``section.key`` (``+`` adds a key below an existing one) names a key of params.yaml."""
    node = yaml.safe_load((REPO / "params.yaml").read_text())
    parts = key.lstrip("+").split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return key.startswith("+") and depth == len(parts) - 1 and isinstance(node, dict)
    return True


def check_dvc(words: list[str], experiments: set[str]) -> None:
    from dvc.cli import DvcParserError, parse_args

    try:
        args = parse_args(words[1:])  # dvc's own parser: unknown commands and options fail here
    except DvcParserError as error:
        raise AssertionError(f"{' '.join(words)}: not a dvc command line") from error
    for setting in getattr(args, "set_param", None) or []:
        for assignment in setting.split(","):
            key = assignment.split("=")[0]
            assert params_key_exists(key), f"{' '.join(words)}: no parameter {key} in params.yaml"
    if getattr(args, "name", None):
        experiments.add(args.name)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for target in getattr(args, "targets", None) or []:
        assert target in stages, f"{' '.join(words)}: no stage {target} in dvc.yaml"
    if words[1:3] == ["plots", "diff"]:
        for revision in args.revisions:
            assert revision in experiments, f"{' '.join(words)}: no experiment {revision} above"


def check_command(words: list[str], experiments: set[str]) -> bool:
    """Checks one command a page shows; returns whether it was one this test knows."""
    from digitpipe.cli import build_parser

    program = words[0]
    if program == "make":
        assert set(words[1:]) <= make_targets(), f"{' '.join(words)}: not a make target"
    elif program == "digitpipe":
        build_parser().parse_args(words[1:])  # exits 2 (SystemExit) on a wrong command line
    elif program == "dvc":
        check_dvc(words, experiments)
    elif words[:2] == ["git", "checkout"]:
        files = words[words.index("--") + 1 :]
        assert all((REPO / f).exists() for f in files), f"{' '.join(words)}: no such file"
    else:
        return False
    return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_shown_commands_are_real(page: Path) -> None:
    experiments: set[str] = set()
    checked = sum(check_command(words, experiments) for words in bash_commands(page))
    if page.name == "README.md":
        assert checked == 7  # make repro, make test and the five experiment commands


def test_a_wrong_command_is_caught() -> None:
    for words in (
        ["make", "reproduce"],
        ["digitpipe", "predikt", "x.png"],
        ["dvc", "exp", "run", "-S", "train.learning_rate=0.1"],
        ["dvc", "repro", "training"],
        ["dvc", "plots", "diff", "never-made", "nor-this"],
        ["dvc", "exp", "shows"],
    ):
        with pytest.raises((AssertionError, SystemExit)):
            check_command(words, set())


@pytest.mark.slow
def test_readme_experiments_run_as_shown(hydra_pipeline, tmp_path: Path) -> None:
    """The README's five experiment commands, word for word, in a tiny pipeline repo: both
    experiments run, the reset between them starts the second from the committed params, the
    table names both, and the plots page is written."""
    project = tmp_path / "project"
    env = copy_pipeline(*hydra_pipeline, project)  # as the repo is: params.yaml from conf/
    shown = [w for w in bash_commands(REPO / "README.md") if w[0] in ("dvc", "git")]
    assert len(shown) == 5
    outputs = []
    for words in shown:
        result = subprocess.run(words, cwd=project, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(words)}\n{result.stdout}{result.stderr}"
        outputs.append(result.stdout)
        if words[:3] == ["dvc", "exp", "run"] and "train.lr=0.005" in words:
            params = yaml.safe_load((project / "params.yaml").read_text())
            assert (params["model"]["arch"], params["train"]["lr"]) == ("bncnn", 0.005)
    table = outputs[3]
    assert "lenet-1ep" in table and "bncnn-lr005" in table and "test.accuracy" in table, table
    assert (project / "dvc_plots" / "index.html").exists()


def test_the_newcomers_map_lists_every_package_and_nothing_else():
    """README's tree under src/digitpipe/ names each module and package there, and no other."""
    readme = (REPO / "README.md").read_text()
    block = FENCE.search(readme[readme.index("## A newcomer's map") :]).group(0)
    below = block.split("src/digitpipe/\n", 1)[1].splitlines()
    # A line's first column: one or more names ("ingest/ train/ ... report/"), then the text.
    listed = {
        name.rstrip("/").removesuffix(".py")
        for line in itertools.takewhile(lambda line: line.startswith("  "), below)
        for name in re.split(r"\s{2,}", line.strip())[0].split()
    }
    package = REPO / "src" / "digitpipe"
    present = {
        path.stem if path.suffix == ".py" else path.name
        for path in package.iterdir()
        if path.name not in ("__init__.py", "__pycache__")
    }
    assert listed == present
