"""Data-parallel training on CPU: two processes under ``torchrun`` (gloo), no code change.

Each rank trains on its own share of the batches (different jets), DDP averages the
gradients, so the replicas must stay identical, parameters and BatchNorm statistics alike,
and the checkpoint rank 0 writes must be that common state; stopping mid-epoch and
resuming must give the same weights as not stopping, under DDP too; an objective with
parameters that get no gradient (MPM: the encoder's pooling) must train as well. Marked
slow: starting two torch processes under torchrun takes half a minute on a busy 2-core
machine.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resim.train.config import parse_config
from resim.train.loop import Runtime, load_checkpoint
from resim.train.pretrain import open_data, pretrain_batches

from .tiny import TINY_TRANSFORMER

WORKER = '''
import json, sys, torch
import torch.distributed as dist
from resim.train.config import parse_config
from resim.train.pretrain import pretrain

text, data, out, MPM = sys.argv[1], sys.argv[2:4], sys.argv[4], sys.argv[5]
config = parse_config(text, "ddp.toml")
result = pretrain(config, data, out, progress=False)
rank = dist.get_rank()
torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
# the same run stopped in the middle of its second epoch, then resumed
per_epoch = result.position.step // 2
pretrain(config, data, f"{out}/stopped", progress=False, stop_after_steps=per_epoch + 1)
resumed = pretrain(None, None, f"{out}/stopped", resume=True, progress=False)
same = all(torch.equal(v, resumed.model.state_dict()[k])
           for k, v in result.model.state_dict().items())
# masked particle modelling never runs the encoder's class-attention pooling: DDP needs
# find_unused_parameters (without it the second step fails)
mpm = pretrain(parse_config(MPM, "mpm.toml"), data, f"{out}/mpm", progress=False)
torch.save(mpm.model.state_dict(), f"{out}/mpm/rank{rank}.pt")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"world": dist.get_world_size(), "steps": result.position.step,
               "val_loss": result.val_loss, "train_loss": result.train_loss,
               "resumed_equal": same, "mpm_steps": mpm.position.step,
               "mpm_loss": mpm.train_loss}, f)
dist.destroy_process_group()
'''

CONFIG = """
[encoder]
name = "particlenet"
embed_dims = [16]
edge_dims = [[16, 16], [16, 16]]
k = 8

[method]
name = "rs3l"

[data]
max_particles = 32
batch_size = 32

[run]
epochs = 2
threads = 1
"""


MPM = TINY_TRANSFORMER + """

[method]
name = "mpm"
decoder_dim = 16
decoder_layers = 1
decoder_heads = 2
order_tokens = 32

[data]
max_particles = 32
batch_size = 32
max_jets = 200

[data.views]
count = 1

[run]
epochs = 1
threads = 1
"""


def torchrun() -> str:
    found = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(found).exists():
        pytest.skip("torchrun not found")
    return found


@pytest.mark.slow
def test_two_process_ddp_keeps_replicas_identical(top_dataset: Path, qcd_dataset: Path,
                                                  tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun(), "--standalone", "--nproc-per-node", "2", str(script), CONFIG,
         str(top_dataset), str(qcd_dataset), str(out), MPM],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    info = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert info[0]["world"] == info[1]["world"] == 2
    assert info[0]["steps"] == info[1]["steps"] >= 6  # the stop falls mid-epoch
    assert info[0]["val_loss"] == info[1]["val_loss"]  # averaged over both ranks' shares
    assert info[0]["resumed_equal"] and info[1]["resumed_equal"]  # stop + resume is exact
    states = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    initial = None
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
        assert torch.equal(value, checkpoint["model"][key]), key
        if key.endswith("running_mean"):
            initial = value
    assert initial is not None and initial.abs().sum() > 0  # BatchNorm did learn statistics
    # each rank took its own half of the batches of an epoch
    alone = pretrain_batches(parse_config(CONFIG), open_data([top_dataset, qcd_dataset]),
                             "train", Runtime(torch.device("cpu")))
    assert info[0]["steps"] == 2 * math.ceil(len(alone.batches()) / 2)
    # MPM (unused pooling parameters) trains under DDP too, replicas identical
    assert info[0]["mpm_steps"] == info[1]["mpm_steps"] >= 2
    assert math.isfinite(info[0]["mpm_loss"]) and info[0]["mpm_loss"] == info[1]["mpm_loss"]
    mpm = [torch.load(out / "mpm" / f"rank{r}.pt") for r in range(2)]
    for key, value in mpm[0].items():
        assert torch.equal(value, mpm[1][key]), key
