"""The docs tests' collector: the fenced code blocks of README.md and docs/*.md, how each
kind runs, and the normalisation of shown outputs. The convention is described in
tests/test_docs.py; this module is its machinery."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER = re.compile(r"^\*Not run by the docs tests: (?P<reason>.+)\*\s*$")
TEST_REF = re.compile(r"`?(tests/[\w/]+\.py)::(\w+)`?")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")
FILE_HEADER = re.compile(r"^# (?P<name>[\w-]+\.py)\s*$")
RUNNABLE = {"python", "bash", "sh", "console"}  # what a marker must name a test for
TIMEOUT = 60
BACKGROUND = re.compile(r"(?<![&>])&(?![&>])")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None = None  # the reason, when the block carries a "Not run" marker
    index: int = 0  # position in its document
    before: str = ""  # the text line before it

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        """python, shell, session (commands with their output), toml, synopsis or other."""
        first = self.text.lstrip("\n").splitlines()[0] if self.text.strip() else ""
        if self.lang == "console" or first.startswith("$ "):
            return "session"
        if self.lang in ("bash", "sh"):
            return "shell"
        if self.lang in ("python", "toml"):
            return self.lang
        if not self.lang and first.startswith("streamlog ") and re.search(r"\[-|\[--|[A-Z]{3}", first):
            return "synopsis"
        return "other"

    @property
    def tests(self) -> list[tuple[str, str]]:
        return TEST_REF.findall(self.marker or "")


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, each with the marker line before it (if any)."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(m["fence"]):
            end += 1
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before].strip()) if before >= 0 else None
        body = "\n".join(line[len(m["indent"]):] for line in lines[i + 1:end])
        found.append(Block(path, i + 1, m["lang"], body + "\n", marker and marker["reason"], len(found),
                           lines[before] if before >= 0 else ""))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


def existing_test(file: str, name: str) -> bool:
    source = (ROOT / file).read_text() if (ROOT / file).exists() else ""
    return re.search(rf"^(async )?def {name}\(", source, re.MULTILINE) is not None


# --- normalising shown and real output -------------------------------------------------

_NORMALISE = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d([.,]\d+)?(Z|[+-]\d\d:\d\d)?"), "<TIME>"),
    (re.compile(r"\b\d+(\.\d+)?(s|m|h|d) ago\b|\bnow\b"), "<AGE>"),
    (re.compile(r"sqlite:///\S*?\.db"), "<DB>"),
    (re.compile(r"(/[\w.-]+)+\.db\b"), "<DB>"),
    (re.compile(r"(?<=ServerSelectionTimeoutError: ).*"), "…"),  # the driver's own words
    (re.compile(r"(?<=: cause: )pymongo.*"), "…"),
    (re.compile(r"\d+(\.\d+)? s (?=\(stopped|\(kept)"), "<DURATION> "),
]
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):\n(?:  .*\n)+", re.MULTILINE)


def normalise(text: str, tmp: Path | None = None) -> list[str]:
    """Lines with volatile parts (times, ages, database paths, temp dirs, the driver's
    messages, traceback frames) replaced and runs of blanks collapsed (column widths follow
    the values)."""
    text = _TRACEBACK.sub("Traceback <frames>\n", text)
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    if tmp is not None:
        text = text.replace(str(tmp), "<TMP>")
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines() if line.strip()]


# --- running a document's blocks -------------------------------------------------------

@dataclass
class Session:
    """One document's run: a temporary working directory, a fresh embedded database and
    one Python namespace, shared by its blocks in order."""

    path: Path
    dir: Path
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    done: set = field(default_factory=set)
    url: str | None = None  # default: a fresh file in ``dir``

    def __post_init__(self) -> None:
        for name in ("examples", "scripts"):  # paths as in a checkout: python examples/run.py …
            (self.dir / name).symlink_to(ROOT / name)

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(STREAMLOG_URL=self.url or f"sqlite:///{self.dir}/docs.db", COLUMNS="88", TERM="dumb",
                   NO_COLOR="1", PYTHONPATH=f"{self.dir}{os.pathsep}{ROOT}")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        return env

    def run(self, block: Block) -> None:
        if block.index in self.done:
            return
        self.done.add(block.index)
        getattr(self, f"_{block.kind}")(block)

    def _python(self, block: Block) -> None:
        header = FILE_HEADER.match(block.text.splitlines()[0])
        if header:  # also a file the shell blocks after it run
            (self.dir / header["name"]).write_text(block.text)
        saved = {k: os.environ.get(k) for k in ("STREAMLOG_URL", "COLUMNS")}
        cwd = os.getcwd()
        os.environ.update(STREAMLOG_URL=self.env["STREAMLOG_URL"], COLUMNS="88")
        os.chdir(self.dir)
        try:
            exec(compile(block.text, block.id, "exec"), self.namespace)  # noqa: S102 - the docs' own code is the test
        finally:
            os.chdir(cwd)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def shell(self, script: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``script`` with bash in the session's directory; output to a file (not a pipe,
        which a background job would hold open); the whole process group ends with it."""
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(["bash", "-c", script], cwd=self.dir, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            out.seek(0)
            return subprocess.CompletedProcess(script, code, out.read(), "")

    def _shell(self, block: Block) -> None:
        proc = self.shell("set -e -o pipefail\n" + block.text)
        assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{proc.stdout}"

    def _session(self, block: Block) -> None:
        """``$ command`` lines run one by one (stdout and stderr together); the lines up to
        the next command are its shown output, compared after :func:`normalise`."""
        for command, shown in commands(block.text):
            proc = self.shell(command)
            real, expected = normalise(proc.stdout, self.dir), normalise(shown, self.dir)
            if BACKGROUND.search(command):  # a background job: its lines interleave with others'
                real, expected = sorted(real), sorted(expected)
            assert real == expected, (
                f"{block.id}: $ {command}\n--- shown\n{shown}--- real\n{proc.stdout}")

    def _toml(self, block: Block) -> None:
        """Parsed; a block introduced as a file of the repository (`examples/x/app.toml`)
        is that file, which the project's own validator accepts."""
        shown = tomllib.loads(block.text)
        quoted = re.search(r"`([\w/.-]+\.toml)`", block.before)
        if quoted and (ROOT / quoted[1]).exists():
            from streamlog.apps import load_app

            assert shown == tomllib.loads((ROOT / quoted[1]).read_text()), f"{block.id}: not {quoted[1]}"
            load_app(ROOT / quoted[1])

    def _synopsis(self, block: Block) -> None:
        """Every option a synopsis names is one its command's --help lists."""
        for line in re.split(r"\n(?=streamlog )", block.text):
            words = line.removeprefix("streamlog ").split()
            path = [w for w in words[:2] if re.fullmatch(r"[a-z]+", w)]
            if path and path[0] not in COMMANDS:
                path = []
            help_text = self.shell(shlex.join(["streamlog", *path, "--help"]), timeout=30).stdout
            for option in set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", line)):
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
                    f"{block.id}: streamlog {' '.join(path)} --help has no {option}")

    def _other(self, block: Block) -> None:
        raise AssertionError(f"{block.id}: a ```{block.lang} block needs a 'Not run by the docs tests' marker")


COMMANDS = {"ls", "info", "tail", "append", "run", "trim", "drop", "group", "redrive", "serve", "up",
            "bridge", "listen", "publish"}


def commands(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("$ "):
            pairs.append((line[2:].rstrip("\n"), ""))
        elif pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + line)
    return pairs


def regenerate(block_id: str, directory: Path, url: str | None = None) -> str:
    """Rerun a session block and write the real outputs into its document (after its
    earlier ``# name.py`` blocks are written to ``directory``); returns the new text."""
    import shutil

    file, line = block_id.rsplit(":", 1)
    path = (ROOT / file).resolve()
    found = blocks(path)
    block = next(b for b in found if b.line == int(line))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    session = Session(path, directory, url=url)
    for earlier in found[:block.index]:
        header = earlier.kind == "python" and FILE_HEADER.match(earlier.text.splitlines()[0])
        if header:
            (directory / header["name"]).write_text(earlier.text)
    out = []
    for command, _ in commands(block.text):
        real = session.shell(command).stdout
        out.append(f"$ {command}\n" + "".join(f"{line.rstrip()}\n" for line in real.splitlines()))
    now = next(b for b in blocks(path) if b.text == block.text)  # the document may have moved meanwhile
    lines = path.read_text().split("\n")
    lines[now.line:now.line + len(now.text.rstrip("\n").split("\n"))] = "".join(out).rstrip("\n").split("\n")
    path.write_text("\n".join(lines))
    return "".join(out)


if __name__ == "__main__":
    # python tests/doclib.py docs/cli.md:551 /tmp/cli-demo sqlite:////tmp/cli-demo/db/demo.db
    print(regenerate(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4]))
