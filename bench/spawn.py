"""Start one measured command from a small process, and report its wall time and peak RSS.

    python -S -m bench.spawn REPORT.json COMMAND [ARG...]

Why not start it straight from the harness: on Linux a child's ``ru_maxrss`` starts from the memory
high-water mark of the process that forked it (the forked or vfork-shared address space is recorded
at ``exec``). The harness holds the dataset and the page cache (hundreds of MB at 1M records), so a
child started from it would report at least that. Started from this small process instead, the
floor is this process's own few MB, far below any tap's.

The command inherits stdin, stdout and stderr. The report holds ``wall_seconds`` (fork to exit),
``peak_rss_kb`` (``os.wait4`` rusage, KiB on Linux) and ``returncode``; this process exits with the
command's exit code (128 + signal when it was killed).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__ or "")
        raise SystemExit(2)
    report, command = sys.argv[1], sys.argv[2:]
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execvp(command[0], command)  # noqa: S606 - the harness's own command line
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as handle:
        json.dump(
            {"wall_seconds": wall, "peak_rss_kb": int(usage.ru_maxrss), "returncode": code}, handle
        )
    raise SystemExit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
