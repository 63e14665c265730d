"""`msrdsl check` and `msrdsl fmt`: outputs, exit codes, and file handling."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from msrdsl.cli import cli, main
from msrdsl.cli.console import run_guarded
from msrdsl.cli.fmt import formatted
from msrdsl.errors import MsrdslError
from msrdsl.lang import format_space, load_space, parse_space

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted((ROOT / "spaces").glob("*.space"))
GENOTYPES = sorted((ROOT / "genotypes").glob("*.genotype"))

BROKEN = """\
space broken {
  cell {
    kep 2
  }
}
"""


def run(capsys, *args: str) -> tuple[int, str, str]:
    """`msrdsl ARGS` through the real entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture
def spaces_dir(tmp_path) -> Path:
    """A copy of spaces/ (children find their parents there) to break and rewrite files in."""
    for path in SPACES:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# check


def test_check_passes_every_shipped_space(capsys):
    code, out, err = run(capsys, "check", *map(str, SPACES))
    assert (code, err) == (0, "")
    for path in SPACES:
        assert f"({path}) ok" in out
    for row in ("operators", "cell", "network", "mixing", "constraint", "criterion", "epoch",
                "search", "evaluate"):
        assert out.count(f"\n{row} ") == len(SPACES), row


def test_check_summary_names_what_the_space_does(capsys):
    code, out, _ = run(capsys, "check", str(ROOT / "spaces" / "msr.space"))
    assert code == 0
    assert "sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5" in out
    assert "mixing      uniform" in out
    assert "spectral norm 1, power iteration x5" in out
    assert "msr: op argmin mean_over_cells(stable_rank(last_conv))" in out


def test_check_passes_every_shipped_genotype(capsys):
    code, out, err = run(capsys, "check", *map(str, GENOTYPES))
    assert (code, err) == (0, "")
    assert out.count(" ok: normal cell") == len(GENOTYPES)


def test_quiet_check_prints_nothing(capsys):
    assert run(capsys, "check", "-q", *map(str, SPACES)) == (0, "", "")


def test_a_broken_file_is_located_quoted_and_exits_2(capsys, tmp_path):
    path = tmp_path / "broken.space"
    path.write_text(BROKEN)
    code, out, err = run(capsys, "check", str(path))
    assert (code, out) == (2, "")
    assert err == (f"{path}:3:5: error: unknown setting 'kep' in cell\n"
                   "      kep 2\n"
                   "      ^~~\n"
                   "  hint: did you mean 'keep'?\n")


def test_several_files_report_each_and_exit_2_if_any_fails(capsys, tmp_path):
    bad = tmp_path / "broken.space"
    bad.write_text(BROKEN)
    worse = tmp_path / "worse.space"
    worse.write_text("space worse {\n  cell {\n")
    good = ROOT / "spaces" / "msr.space"
    code, out, err = run(capsys, "check", str(bad), str(good), str(worse))
    assert code == 2
    assert f"({good}) ok" in out
    assert err.startswith(f"{bad}:3:5: error: unknown setting 'kep' in cell\n")
    assert f"\n{worse}:2:8: error: the file ends early; expected a name, '}}'\n" in err
    assert "Traceback" not in err


def test_check_applies_overrides(capsys):
    code, out, _ = run(capsys, "check", "--set", "search.epochs=7", str(ROOT / "spaces" / "msr.space"))
    assert code == 0 and "7 epochs" in out
    code, _, err = run(capsys, "check", "--set", "search.epochs=0", str(ROOT / "spaces" / "msr.space"))
    assert code == 2 and err.startswith("--set:1:15: error: 'epochs' must be at least 1, got 0\n")


def test_check_of_missing_file_folder_and_other_suffix(capsys, tmp_path):
    (tmp_path / "folder.space").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    missing = tmp_path / "missing.space"
    code, out, err = run(capsys, "check", str(missing), str(tmp_path / "folder.space"),
                         str(tmp_path / "notes.txt"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{missing}: error: cannot read '{missing}': no such file",
        f"{tmp_path / 'folder.space'}: error: cannot read '{tmp_path / 'folder.space'}': it is a folder",
        f"{tmp_path / 'notes.txt'}: error: expected a .space or .genotype file",
    ]


def test_check_reports_an_unknown_operator_in_a_genotype(capsys, tmp_path):
    path = tmp_path / "typo.genotype"
    path.write_text(GENOTYPES[0].read_text().replace("sep_conv_3x3(1)", "sep_conv_3x4(1)", 1))
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:") and "unknown operator 'sep_conv_3x4'" in first
    assert "did you mean 'sep_conv_3x3'?" in err


def test_no_traceback_from_a_subprocess(tmp_path):
    """The installed entry point: exit code 2 and a located message, no traceback."""
    path = tmp_path / "broken.space"
    path.write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "msrdsl", "check", str(path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MSRDSL_DEBUG": ""})
    assert done.returncode == 2
    assert done.stderr.startswith(f"{path}:3:5: error: unknown setting 'kep' in cell\n")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# run_guarded: exit codes of the one error path


def test_run_guarded_exit_codes(capsys, tmp_path):
    path = tmp_path / "broken.space"
    path.write_text(BROKEN)
    assert run_guarded(cli, ["check", "-q", str(ROOT / "spaces" / "msr.space")], debug=False) == 0
    assert run_guarded(cli, ["check", str(path)], debug=False) == 2
    assert run_guarded(cli, ["fmt", "--no-such-option", str(path)], debug=False) == 2  # usage
    assert run_guarded(cli, ["--help"], debug=False) == 0
    capsys.readouterr()


def test_run_guarded_maps_a_user_error_to_2_and_debug_reraises(capsys):
    import click

    @click.command()
    def failing():
        raise MsrdslError("something the user can fix")

    assert run_guarded(failing, [], debug=False) == 2
    assert capsys.readouterr().err == "error: something the user can fix\n"
    with pytest.raises(MsrdslError):
        run_guarded(failing, [], debug=True)


def test_clirunner_on_the_click_group():
    result = CliRunner().invoke(cli, ["check", "-q", str(ROOT / "spaces" / "quickstart.space")])
    assert result.exit_code == 0 and result.output == ""


# ---------------------------------------------------------------------------------------------
# fmt


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_fmt_prints_the_canonical_layout(capsys, path):
    code, out, err = run(capsys, "fmt", str(path))
    assert (code, err) == (0, "")
    assert out == formatted(str(path))
    assert out.startswith("# ")  # the header comment naming what the space reproduces


def test_fmt_write_rewrites_only_when_changed_and_keeps_permissions(capsys, spaces_dir):
    path = spaces_dir / "darts-full.space"  # its operator list spans two lines: not canonical
    original = path.read_text()
    path.chmod(0o640)
    code, out, err = run(capsys, "fmt", "--write", str(path))
    assert (code, out, err) == (0, f"reformatted {path}\n", "")
    rewritten = path.read_text()
    assert rewritten != original and rewritten == formatted(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_space(path) == load_space(ROOT / "spaces" / "darts-full.space")
    inode, mtime = path.stat().st_ino, path.stat().st_mtime_ns
    assert run(capsys, "fmt", "--write", str(path)) == (0, "", "")
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime)
    assert sorted(p.name for p in spaces_dir.iterdir()) == sorted(p.name for p in SPACES)


def test_fmt_write_is_atomic(capsys, spaces_dir, monkeypatch):
    path = spaces_dir / "darts-full.space"
    original = path.read_text()

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SystemExit) as exit_info:
        main(["fmt", "--write", str(path)])
    assert exit_info.value.code == 2  # a failed write is the user's to fix, not a traceback
    assert "cannot write" in capsys.readouterr().err
    assert path.read_text() == original
    assert sorted(p.name for p in spaces_dir.iterdir()) == sorted(p.name for p in SPACES)


def test_fmt_flatten_resolves_extends(capsys):
    path = ROOT / "spaces" / "msr-max.space"
    code, out, err = run(capsys, "fmt", "--flatten", str(path))
    assert (code, err) == (0, "")
    assert "extends" not in out and "\n  select msr_max {\n" in out
    assert parse_space(out, "<flat>") == load_space(path)
    assert out == format_space(load_space(path))


def test_fmt_write_flatten_is_refused(capsys, spaces_dir):
    path = spaces_dir / "msr-max.space"
    before = path.read_text()
    code, out, err = run(capsys, "fmt", "--write", "--flatten", str(path))
    assert (code, out) == (2, "")
    assert err.startswith("error: --write with --flatten would replace the file's `extends`")
    assert path.read_text() == before


def test_fmt_of_an_invalid_file_exits_2_and_writes_nothing(capsys, tmp_path):
    path = tmp_path / "broken.space"
    path.write_text(BROKEN)
    for args in (["fmt", str(path)], ["fmt", "--write", str(path)]):
        code, out, err = run(capsys, *args)
        assert (code, out) == (2, "")
        assert err.startswith(f"{path}:3:5: error: unknown setting 'kep' in cell\n")
    assert path.read_text() == BROKEN


def test_fmt_of_a_genotype_and_its_refusals(capsys, tmp_path):
    path = GENOTYPES[0]
    code, out, _ = run(capsys, "fmt", str(path))
    assert code == 0 and out == path.read_text()
    code, _, err = run(capsys, "fmt", "--flatten", str(path))
    assert code == 2 and err == f"{path}: error: --flatten applies to .space files only\n"
    commented = tmp_path / "commented.genotype"
    commented.write_text(path.read_text().replace("  reduce {", "  # the reduction cell\n  reduce {"))
    code, _, err = run(capsys, "fmt", "--write", str(commented))
    assert code == 2
    assert err.startswith(f"{commented}:")
    assert "error: formatting would drop this comment\n    # the reduction cell\n    ^~~~" in err
