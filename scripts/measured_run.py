"""What every measurement script does: run one tap as its own process and time it.

The tap writes its Singer messages to a file (as it would to a target), so that large runs do not
hold their output in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MeasuredRun:
    wall_seconds: float
    stderr: str
    records_by_stream: dict[str, int]
    state_messages: int

    @property
    def records(self) -> int:
        return sum(self.records_by_stream.values())


def run_tap(
    module: str,
    config: dict,
    checkout: Path | None = None,
    select: t.Collection[str] | None = None,
) -> MeasuredRun:
    """Run ``python -m module --config …`` to the end; raise if it fails.

    ``checkout``: run the tap of another checkout of the project (e.g. an older commit's, in a
    ``git worktree``) instead of this one's. ``select``: the streams to select (a catalog from the
    tap's ``--discover``); otherwise the tap's default selection.
    """
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp, "config.json")
        config_path.write_text(json.dumps(config))
        command = [sys.executable, "-m", module, "--config", str(config_path)]
        if select is not None:
            command += ["--catalog", str(_catalog(command, Path(tmp), select, checkout))]
        out = Path(tmp, "out.jsonl")
        began = time.perf_counter()
        with out.open("w") as sink:
            result = subprocess.run(
                command,
                stdout=sink,
                stderr=subprocess.PIPE,
                text=True,
                check=True,
                cwd=checkout,
                env={**os.environ, "PYTHONPATH": str(checkout)} if checkout else None,
            )
        wall = time.perf_counter() - began
        streams: dict[str, int] = {}
        states = 0
        with out.open() as lines:
            for line in lines:
                if line.startswith('{"type":"RECORD"'):
                    name = json.loads(line)["stream"]
                    streams[name] = streams.get(name, 0) + 1
                elif line.startswith('{"type":"STATE"'):
                    states += 1
    return MeasuredRun(wall, result.stderr, streams, states)


def _catalog(
    command: list[str], folder: Path, select: t.Collection[str], checkout: Path | None
) -> Path:
    discovered = subprocess.run(
        [*command, "--discover"], capture_output=True, text=True, check=True, cwd=checkout
    ).stdout
    catalog = json.loads(discovered)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in select
    path = folder / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path
