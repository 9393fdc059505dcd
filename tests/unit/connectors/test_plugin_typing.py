"""An out-of-tree connector written from connectors/README.md type-checks with `mypy --strict`
against the `clustertwin` distribution as a plugin author installs it.

The checks run against what is shipped, not this source tree: the project's wheel is built
once, installed into a fresh virtualenv (its runtime dependencies come from this one through a
plain path entry, so this venv's editable finder is not seen), and mypy is pointed at that
interpreter. The plugin's code is the README's own, so the README cannot drift from what
type-checks. Removing the markers from the installed copy must make mypy fail: that is what
proves the markers, not some path leak, are what makes the imports typed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
README = ROOT / "connectors" / "README.md"
#: the parts of the tree a build must not copy: VCS data, environments, earlier build output
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def readme_block(lang: str, containing: str) -> str:
    section = README.read_text().split("## Add a site connector", 1)[1]
    for block in re.findall(rf"```{lang}\n(.*?)```", section, re.S):
        if containing in block:
            return block
    raise AssertionError(f"no ```{lang} block with {containing!r} in the README section")


def clean_env() -> dict[str, str]:
    """Without PYTHONPATH: the test runner's points at the source tree, which would hide a
    wheel that lacks its markers."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )


def fresh_venv(where: Path) -> Path:
    """A venv that sees this venv's packages (pydantic, orjson, aiohttp...) but not its
    editable install of clustertwin: a path line in a .pth adds the directory without running
    the .pth files inside it."""
    ok = run(sys.executable, "-m", "venv", "--without-pip", where)
    assert ok.returncode == 0, ok.stderr
    python = where / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site = Path(purelib.stdout.strip())
    (site / "runtime-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="session")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree as it is now (uncommitted files included), outside it: building writes
    build/ and *.egg-info, which must not land in a worktree others read."""
    src = tmp_path_factory.mktemp("src") / "clustertwin"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    return src


@pytest.fixture(scope="session")
def wheel_env(source_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    pip = (sys.executable, "-m", "pip")
    built = run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ".",
                cwd=source_copy)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("clustertwin-*.whl")
    python = fresh_venv(tmp_path_factory.mktemp("venv-wheel") / "venv")
    installed = run(*pip, "--python", python, "install", "-q", "--no-deps", wheel)
    assert installed.returncode == 0, installed.stderr
    return python


@pytest.fixture(scope="session")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin project of the README's "Add a site connector": its module, its HTTP
    variant and its conformance test, each exactly as the README shows them."""
    proj = tmp_path_factory.mktemp("acme-plugin")
    (proj / "pyproject.toml").write_text(readme_block("toml", "[project]"))
    for package, marker in (("acme_connector", "class AcmeConnector("),
                            ("acme_http", "class AcmeHttpConnector(")):  # fmt: skip
        (proj / package).mkdir()
        (proj / package / "__init__.py").write_text(readme_block("python", marker))
    (proj / "tests").mkdir()
    (proj / "tests" / "test_acme.py").write_text(
        readme_block("python", "def test_acme_is_conformant")
    )
    return proj


def mypy(plugin: Path, python: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return run(
        sys.executable, "-m", "mypy", "--strict", "--python-executable", python,
        "--cache-dir", cache, "acme_connector", "acme_http", "tests/test_acme.py",
        cwd=plugin,
    )  # fmt: skip


def test_readme_plugin_type_checks_against_the_installed_wheel(
    wheel_env: Path, plugin: Path, tmp_path: Path
) -> None:
    result = mypy(plugin, wheel_env, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 3 source files" in result.stdout


def test_without_the_markers_the_same_plugin_fails(
    wheel_env: Path, plugin: Path, tmp_path: Path
) -> None:
    """The control: the installed copy with connectors' py.typed markers removed (as the
    distribution shipped before) must make mypy reject the imports of connectors.sdk."""
    purelib = run(wheel_env, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    installed = Path(purelib.stdout.strip()) / "connectors"
    markers = sorted(installed.rglob("py.typed"))
    assert {m.relative_to(installed).as_posix() for m in markers} >= {"py.typed", "sdk/py.typed"}
    stash = tmp_path / "stash"
    stash.mkdir()
    moved = [(m, stash / f"{i}.typed") for i, m in enumerate(markers)]
    for m, kept in moved:
        m.rename(kept)
    try:
        result = mypy(plugin, wheel_env, tmp_path / "cache")
    finally:
        for m, kept in moved:
            kept.rename(m)
    assert result.returncode == 1, result.stdout
    assert "module is installed, but missing library stubs or py.typed marker" in result.stdout
    assert '"connectors.sdk"' in result.stdout


@pytest.mark.parametrize(("mode", "passes"), [("strict", True), ("compat", True), (None, False)])
def test_editable_installs_mypy_can_follow(
    mode: str | None, passes: bool, source_copy: Path, plugin: Path, tmp_path: Path
) -> None:
    """What the README tells a developer of the SDK: the default editable install is an
    import hook mypy cannot follow; editable_mode=strict or compat puts a plain path on
    sys.path."""
    python = fresh_venv(tmp_path / "venv")
    settings = ("--config-settings", f"editable_mode={mode}") if mode else ()
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-build-isolation", "-e", ".", *settings, cwd=source_copy,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    result = mypy(plugin, python, tmp_path / "cache")
    if passes:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode == 1, result.stdout
        assert 'Cannot find implementation or library stub for module named "connectors.sdk"' in (
            result.stdout
        )
