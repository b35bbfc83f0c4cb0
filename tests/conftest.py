"""Shared by every test file: the repository root on the import path, and ``run_command``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_command(main, argv, capsys):
    """A command's ``main(argv)`` run in this process -> (exit code, stdout, stderr). Whatever
    goes wrong, the user must see a message, never a traceback."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
