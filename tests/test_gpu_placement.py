"""hydra.sweeper.gpus on a CPU machine: the GPUs are faked by the sweep's own CUDA_VISIBLE_DEVICES, and each worker
process of the plain app records the CUDA_VISIBLE_DEVICES it was given."""
import json

import pytest

from test_plain_apps import ok, rows, run

pytestmark = pytest.mark.slow
FAKED = {"CUDA_VISIBLE_DEVICES": "3,5,7", "PLAINAPP_SLEEP": "0.5"}   # three GPUs, as the sweep sees them


def given(tmp_path):
    return [json.loads((tmp_path / f"ran-{t['number']}.json").read_text())["gpu"] for t in rows(tmp_path)]


@pytest.mark.parametrize("args,expect", [
    (["+device=cuda"], {"3", "5", "7"}),                        # auto: worker i gets GPU i mod 3
    (["+device=cuda", "hydra.sweeper.gpus=[5]"], {"5"}),        # a list names them
    (["+device=cuda", "hydra.sweeper.gpus=null"], {"3,5,7"}),   # null: left as the sweep had it
    ([], {"3,5,7"}),                                            # no device key: not guessed at
])
def test_each_worker_gets_its_slots_gpu(tmp_path, args, expect):
    ok(run(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", *args, env=FAKED))
    assert set(given(tmp_path)) == expect
