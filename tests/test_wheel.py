"""It installs as a package: the wheel built from this checkout carries the shipped personas,
their avatars, the migrations and the console's stylesheet, and the installed `vitte` works
from an empty folder with nothing of the checkout importable.

The wheel is built offline (no build isolation, no index) from a copy of the checkout, so no
build/ folder is left behind here, then installed with pip into a fresh virtual environment
(as `pipx install` does) whose only other path is the test venv's site-packages, for the
dependencies (read through a .pth line: that folder's own .pth files, among them the editable
install's import hook that points at this checkout, are not run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.db import MIGRATIONS_DIR

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# left out of the copy the wheel is built from: VCS, environments, caches, build leftovers
TOP_LEVEL_SKIP = {".git", ".venv", "build", "dist", "artifacts", ".hypothesis", "tests"}
TIMEOUT = 120


@dataclass
class Installed:
    wheel: Path
    venv: Path
    site: Path  # the fresh venv's site-packages, where the wheel went
    workdir: Path  # empty: the commands run here, the SQLite file lands here
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )

    def vitte(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.venv / "bin" / "vitte", *args)


def _skip(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info", ".sqlite3"))}
    if Path(folder).resolve() == ROOT:
        skipped |= {n for n in names if n in TOP_LEVEL_SKIP or n.endswith("_cache")}
    return skipped


def _ok(done: subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr, f"{what}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv, workdir = base / "src", base / "dist", base / "venv", base / "empty"
    shutil.copytree(ROOT, src, ignore=_skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _ok(
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
            capture_output=True, text=True, timeout=TIMEOUT,
        ),
        "pip wheel",
    )
    (wheel,) = dist.glob("vitte-*.whl")

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=TIMEOUT,
        ).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_vitte_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    _ok(
        subprocess.run(
            [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
            capture_output=True, text=True, timeout=TIMEOUT,
        ),
        "pip install",
    )

    workdir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VITTE_", "PYTHON", "VIRTUAL_ENV")) and k != "COLUMNS"
    }
    env |= {"COLUMNS": "200", "PYTHONNOUSERSITE": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    return Installed(wheel=wheel, venv=venv, site=site, workdir=workdir, env=env)


def _files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_wheel_carries_personas_avatars_migrations_and_the_console_stylesheet(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    # the data ships inside the package, as the checkout has it
    fixtures = default_fixtures_dir().parent
    assert fixtures == ROOT / "vitte" / "fixtures"
    assert MIGRATIONS_DIR == ROOT / "vitte" / "migrations"
    locales = ROOT / "vitte" / "locales"  # the text catalogues, compiled and not
    for folder in (fixtures, MIGRATIONS_DIR, ROOT / "tui", ROOT / "vitte" / "webapp" / "static", locales):
        wanted = {f"{folder.relative_to(ROOT).as_posix()}/{name}" for name in _files(folder)}
        assert wanted and wanted - names == set(), folder
    assert {"vitte/fixtures/personas/mila.json", "vitte/fixtures/avatars/mila.svg", "tui/vitte.tcss",
            "vitte/migrations/env.py", "vitte/migrations/script.py.mako",
            "vitte/locales/ru/LC_MESSAGES/vitte.mo", "vitte/locales/en/LC_MESSAGES/vitte.mo"} <= names
    assert any(n.startswith("vitte/migrations/versions/0001_") for n in names)
    # nothing lands at the top of site-packages but the product's own packages
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"vitte", "cli", "tui"}


def test_installed_vitte_upgrades_seeds_chats_and_starts_the_console(installed: Installed) -> None:
    site, workdir = installed.site, installed.workdir
    assert list(workdir.iterdir()) == []

    # the packages come from the installed wheel; the checkout is not importable
    where = _ok(
        installed.run(
            installed.python, "-c",
            "import importlib.util as u, json, cli, tui, vitte;"
            "print(json.dumps([m.__file__ for m in (vitte, cli, tui)] + [u.find_spec('tests') is not None]))",
        ),
        "imports",
    )
    *files, checkout_visible = json.loads(where)
    for file in files:
        assert Path(file).resolve().is_relative_to(site.resolve()), file
    assert checkout_visible is False

    out = _ok(installed.vitte("db", "upgrade"), "vitte db upgrade")
    current = json.loads(_ok(installed.vitte("db", "current", "--json"), "vitte db current"))
    assert current["up_to_date"] is True and current["head"] and out.strip() == f"database at revision {current['head']}"
    assert (workdir / "vitte.sqlite3").is_file()  # the embedded default: SQLite in the working folder

    shipped = {card.id: card for card in read_cards(default_fixtures_dir())}
    seeded = json.loads(_ok(installed.vitte("seed", "--json"), "vitte seed"))
    assert sorted(seeded["added"]) == sorted(shipped) and len(shipped) >= 4
    personas = json.loads(_ok(installed.vitte("personas", "list", "--json"), "vitte personas list"))
    assert {p["id"]: (p["name"], len(p["stories"])) for p in personas} == {
        card.id: (card.name, len(card.stories)) for card in shipped.values()
    }

    first = personas[0]["id"]
    name = shipped[first].name
    said = "Привет! Как проходит твой день?"
    out = _ok(installed.vitte("demo", "--persona", first, "--message", said), "vitte demo")
    lines = out.splitlines()
    asked = lines.index(f"you: {said}")
    replies = [ln for ln in lines[asked + 1 :] if ln.startswith(f"{name}: ")]
    assert replies and len(replies[0]) > len(f"{name}: ") + 10, out

    # the console: starts on this database, loads its stylesheet from the installed package,
    # answers /start; the Web App serves the shipped avatars from the installed package
    console = f"""
import asyncio, sys
from pathlib import Path
from tui.app import VitteConsole
from vitte.config import load_settings
from vitte.webapp.app import default_avatars_dir

site = Path({str(site)!r}).resolve()
avatars = default_avatars_dir().resolve()
assert avatars.is_relative_to(site) and (avatars / "{first}.svg").is_file(), avatars

async def main() -> None:
    app = VitteConsole(load_settings(), user_id=1001, first_name="Аня", language="ru")
    async with app.run_test(size=(100, 30)) as pilot:
        await asyncio.wait_for(app.ready.wait(), 30)
        sheets = [Path(path).resolve() for path, _ in app.stylesheet.source]
        assert any(p.name == "vitte.tcss" and p.is_relative_to(site) for p in sheets), sheets
        await pilot.press("alt+1")  # the START button sends /start
        for _ in range(300):
            texts = [m.text or "" for m in app.player.chat.bot_messages()]
            if texts:
                break
            await pilot.pause(0.05)
        print("greeting:", texts[0] if texts else None)

asyncio.run(main())
"""
    out = _ok(installed.run(installed.python, "-c", console), "console")
    assert out.startswith("greeting: Привет, Аня!"), out
