"""Fork server for the hostile-input corpus (tests/test_trust_corpus.py).

Run as ``python corpus_driver.py CASES.json RESULTS.json``. The driver imports robustlab and torch
once, then runs every case in a forked child that calls the console script's entry point
(``robustlab.cli:main``, reading ``sys.argv``) with file descriptors 1 and 2 redirected to files.
Each child starts from the same untouched state (logging unconfigured, no CLI run before), exits
through ``sys.exit`` like the installed ``robustlab`` command, and costs milliseconds instead of
the seconds of a fresh interpreter that imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time


def _child(case: dict, out_path: str, err_path: str) -> None:
    os.chdir(case["cwd"])
    for k, v in case.get("env", {}).items():
        os.environ[k] = v
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.argv = ["robustlab", *case["args"]]  # non-UTF-8 bytes arrive surrogate-escaped, as in a real argv
    code = 0
    try:
        from robustlab.cli import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report an escape from the CLI's own handling as 99
        import traceback

        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _hashes(folder: str) -> dict[str, str]:
    """sha256 of every file under ``folder`` right after a case (names relative, surrogate-escaped),
    and the text of every scorecard.json under ``NAME:text``."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                data = f.read()
            out[os.path.relpath(p, folder)] = hashlib.sha256(data).hexdigest()
            if name == "scorecard.json":  # kept for the test: the folder may vanish with its mount namespace
                out[os.path.relpath(p, folder) + ":text"] = data.decode("utf-8", "backslashreplace")
    return out


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    cases = json.loads(open(cases_path, encoding="utf-8").read())
    import robustlab.cli  # noqa: F401 - warm imports shared by every forked case
    import robustlab.commands.evaluate  # noqa: F401
    import robustlab.commands.report  # noqa: F401
    import robustlab.data  # noqa: F401
    import robustlab.models  # noqa: F401
    import robustlab.pipelines.evaluate  # noqa: F401
    import robustlab.runner  # noqa: F401
    import robustlab.suite  # noqa: F401 - imports every check (attacks, corruptions, detectors)
    import safetensors.torch  # noqa: F401
    import sklearn.datasets  # noqa: F401 - the digits data set
    import sklearn.model_selection  # noqa: F401
    import yaml  # noqa: F401
    from robustlab.checks import CHECKS

    CHECKS.names()

    results = []
    work = os.path.dirname(os.path.abspath(results_path))
    for i, case in enumerate(cases):
        out_path = os.path.join(work, f".case{i}.out")
        err_path = os.path.join(work, f".case{i}.err")
        if case.get("setup"):  # shell lines run before the case (mounts in the file-system namespace)
            subprocess.run(["sh", "-c", case["setup"]], check=True)
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(case, out_path, err_path)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        with open(out_path, encoding="utf-8", errors="backslashreplace") as f:
            out = f.read()
        with open(err_path, encoding="utf-8", errors="backslashreplace") as f:
            err = f.read()
        results.append({"name": case["name"], "rc": rc, "stdout": out[-2000:], "stderr": err[-4000:], "seconds": round(time.perf_counter() - t, 3),
                        "after": {f: _hashes(f) for f in case.get("inspect", [])}})
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
