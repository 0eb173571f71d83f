"""Template-mining accuracy on the shared LogHub-2k data: a regression floor for CI.

One generic configuration (``MinerConfig()``) for every system, as ``devmesh templates mine``
and ``bench/parsing.py`` use it. Floors sit slightly under the figures measured when they
were set (bench/parsing.py prints the current ones), so a real regression fails while noise
cannot: the miner is deterministic. The issue's targets (avg GA >= 0.95, avg PA >= 0.70,
every system GA >= 0.85, >= 0.8x raw Drain3 speed) are asserted too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devmesh_core.log import configure_logging
from devmesh_core.templates import mine_lines
from devmesh_core.templates.evaluation import (
    LabelledLog,
    group_accuracy,
    load_loghub_dir,
    parsing_accuracy,
)

DATA = Path(__file__).resolve().parents[3] / "shared/data/loghub-2k"

# Measured: avg GA 0.998, avg PA 0.986, min GA 0.993 (Linux).
FLOOR_AVG_GA = 0.99
FLOOR_AVG_PA = 0.975
FLOOR_MIN_GA = 0.985
# system: (GA floor, PA floor), each about 0.01 under the measured value
FLOORS: dict[str, tuple[float, float]] = {
    "Apache": (0.99, 0.99),  # 1.000 / 1.000
    "BGL": (0.99, 0.98),  # 1.000 / 0.994
    "HDFS": (0.99, 0.99),  # 0.998 / 0.999
    "Linux": (0.98, 0.97),  # 0.993 / 0.980
    "OpenSSH": (0.99, 0.985),  # 1.000 / 0.997
    "OpenStack": (0.99, 0.99),  # 1.000 / 1.000
    "Spark": (0.99, 0.91),  # 1.000 / 0.923
    "Zookeeper": (0.985, 0.98),  # 0.995 / 0.994
}

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"LogHub-2k sample data not found at {DATA}"
)


@pytest.fixture(scope="module")
def logs() -> list[LabelledLog]:
    configure_logging("console", "WARNING", stream=sys.stderr)
    found = load_loghub_dir(DATA)
    assert {log.name for log in found} >= set(FLOORS), "a LogHub system is missing"
    return found


@pytest.fixture(scope="module")
def scores(logs: list[LabelledLog]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for log in logs:
        results = mine_lines(log.contents)
        assert len(results) == len(log.contents)
        ids = [r.template_id for r in results]
        # one id per template text and back, so grouping by either gives the same GA
        assert len(set(ids)) == len({r.template for r in results})
        out[log.name] = (
            group_accuracy(log.templates, ids),
            parsing_accuracy(log.templates, [r.template for r in results]),
        )
    return out


def test_averages_and_worst_system(scores: dict[str, tuple[float, float]]) -> None:
    gas = [ga for ga, _ in scores.values()]
    pas = [pa for _, pa in scores.values()]
    report = ", ".join(f"{name} {ga:.3f}/{pa:.3f}" for name, (ga, pa) in scores.items())
    assert sum(gas) / len(gas) >= max(FLOOR_AVG_GA, 0.95), report
    assert sum(pas) / len(pas) >= max(FLOOR_AVG_PA, 0.70), report
    assert min(gas) >= max(FLOOR_MIN_GA, 0.85), report


@pytest.mark.parametrize("system", sorted(FLOORS))
def test_each_system(scores: dict[str, tuple[float, float]], system: str) -> None:
    ga, pa = scores[system]
    ga_floor, pa_floor = FLOORS[system]
    assert ga >= ga_floor, f"{system} GA {ga:.3f} < {ga_floor}"
    assert pa >= pa_floor, f"{system} PA {pa:.3f} < {pa_floor}"


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_faster_than_0_8x_raw_drain3(logs: list[LabelledLog]) -> None:
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    example = [  # drain3's documented example masking
        (r"((?<=[^A-Za-z0-9])|^)(([0-9a-f]{2,}:){3,}([0-9a-f]{2,}))((?=[^A-Za-z0-9])|$)", "ID"),
        (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)", "IP"),
        (r"((?<=[^A-Za-z0-9])|^)([0-9a-f]{6,} ?){3,}((?=[^A-Za-z0-9])|$)", "SEQ"),
        (r"((?<=[^A-Za-z0-9])|^)([0-9A-F]{4} ?){4,}((?=[^A-Za-z0-9])|$)", "SEQ"),
        (r"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)", "HEX"),
        (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
        (r"(?<=executed cmd )(\".+?\")", "CMD"),
    ]

    def drain3_all() -> None:
        for log in logs:
            config = TemplateMinerConfig()
            config.masking_instructions = [MaskingInstruction(p, n) for p, n in example]
            miner = TemplateMiner(config=config)
            for line in log.contents:
                miner.add_log_message(line)

    def pipeline_all() -> None:
        for log in logs:
            mine_lines(log.contents)

    t_drain = t_pipe = float("inf")
    for _ in range(3):  # interleaved, best of three: both see the same machine load
        t_pipe = min(t_pipe, _best(pipeline_all, 1))
        t_drain = min(t_drain, _best(drain3_all, 1))
    assert t_drain / t_pipe >= 0.8, f"pipeline {t_pipe:.2f}s vs raw Drain3 {t_drain:.2f}s"
