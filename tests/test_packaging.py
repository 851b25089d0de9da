"""What a wheel of augdag holds: every stage package, the expectation suites and the report's templates, found from
an installed copy as from the checkout."""

import subprocess
import sys
import zipfile

from augdag import tasks
from helpers import REPO


def test_the_wheel_ships_the_stages_suites_and_templates_and_finds_them_installed(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("augdag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    suites = sorted(p.name for p in (REPO / "expectations").glob("*.json"))
    assert suites and all(f"augdag/expectations/{s}" in names for s in suites)
    for stage in tasks.DAG:
        assert (f"augdag/tasks/{stage.name}/__init__.py" in names) or (f"augdag/tasks/{stage.name}.py" in names)
        assert not stage.text or f"augdag/tasks/{stage.name}/text.py" in names, stage.name
    report_files = {p.relative_to(REPO / "tasks").as_posix() for p in (REPO / "tasks" / "report").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts}
    assert all(f"augdag/tasks/{f}" in names for f in report_files), report_files - names
    assert "augdag/py.typed" in names and "augdag/api.py" in names  # the API is typed for its users
    assert not any(n.startswith(("tests/", "data/")) for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import augdag.layout as l, augdag.tasks.report as r; "
             "print(l.EXPECTATIONS); print(r.__file__); print((l.EXPECTATIONS / 'branch.json').is_file())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out[0].startswith(str(site)) and out[1].startswith(str(site)), out
    assert out[2] == "True"
